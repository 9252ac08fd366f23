"""The one table of the weights files nat-gan knows by name, with their official sha256.

Why a module of its own: the locator (:mod:`natgan.metrics.weights`), LPIPS, the VGG16 extractor, the
Inception extractors and ``doctor`` all need the same facts (file name, download URL, official digest),
and keeping them here, in a module that imports nothing else from ``natgan.metrics``, lets each of them
import the table without import circles.

Digests are the sha256 of the files as published at :attr:`WeightsFile.url`; each was checked against
public sources:

* ``inception-2015-12-05.pt`` (NVIDIA's TorchScript TF-Inception, clean-fid's ``clean`` and
  ``legacy_tensorflow`` modes): as pinned by crowsonkb/k-diffusion's ``InceptionV3FeatureExtractor``;
* ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid): the torch.hub prefix ``6726825d`` in its name,
  full digest as pinned by several evaluation pipelines;
* ``vgg16-397923af.pth`` (torchvision): torch.hub prefix ``397923af`` in its name, full digest as pinned
  by LPIPS users;
* ``vgg.pth`` (LPIPS v0.1 linear layers): computed from richzhang/PerceptualSimilarity's git tree.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_VGG_FILE = "vgg.pth"
LPIPS_VGG_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
INCEPTION_TORCHSCRIPT_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                             "inception-2015-12-05.pt")
INCEPTION_PYTORCH_FID_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                             "pt_inception-2015-12-05-6726825d.pth")


@dataclass(frozen=True)
class WeightsFile:
    kind: str          # "torchscript" (runs code on load: only ever loaded with its official digest or an
    #                    explicit --trust-torchscript) or "pytorch" (a state dict, loaded weights_only=True)
    filename: str
    url: str
    sha256: str        # the official file's full sha256 (lower-case hex)
    label: str = ""    # what the file is, for error messages

    @property
    def sha256_prefix(self) -> str:
        return self.sha256[:8]

    def tool_location(self) -> Path:
        """Where clean-fid / torchvision itself would download this file (for the TorchScript file a
        world-writable ``/tmp``: the locator only accepts it from a directory nobody else can write)."""
        if self.kind == "torchscript":
            return Path("./" if platform.system() == "Windows" else "/tmp") / self.filename
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def cache_location(self) -> Path:
        from natgan.metrics.cache import cache_dir  # a leaf module: no circle

        return cache_dir() / "weights" / self.filename


TORCHSCRIPT = WeightsFile("torchscript", "inception-2015-12-05.pt", INCEPTION_TORCHSCRIPT_URL,
                          "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4", label="Inception")
PYTORCH_FID = WeightsFile("pytorch", "pt_inception-2015-12-05-6726825d.pth", INCEPTION_PYTORCH_FID_URL,
                          "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2", label="Inception")
# torchvision's ImageNet VGG16 (a plain state dict). NVlabs' ``vgg16.pt`` (stylegan2-ada's precision/recall
# network) is TorchScript, i.e. code run on load, so it is not one of the files nat-gan loads.
VGG16 = WeightsFile("pytorch", VGG16_FILE, VGG16_URL,
                    "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", label="VGG16")
# LPIPS v0.1 linear layers on VGG16 (Zhang et al. 2018): a plain state dict, for projection and PPL.
LPIPS_VGG = WeightsFile("pytorch", LPIPS_VGG_FILE, LPIPS_VGG_URL,
                        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
                        label="LPIPS linear-layer")

WEIGHTS: dict[str, WeightsFile] = {
    "inception-torchscript": TORCHSCRIPT,
    "inception-pytorch-fid": PYTORCH_FID,
    "vgg16": VGG16,
    "lpips-vgg": LPIPS_VGG,
}
