"""The noise modes of generators with per-pixel noise inputs (StyleGAN2, GANformer), and their defaults.

A module of its own (no torch import) so the CLI can declare its options without loading torch.

* ``const`` uses each layer's fixed noise buffer: an image is a function of its seed alone. It is the
  default of ``sample`` and the other image-writing commands, as NVIDIA's ``generate.py``.
* ``random`` draws fresh noise maps. It is the default of the metrics (``fid``, the trainer's
  evaluations), because that is the published protocol: stylegan2-ada-pytorch's ``metric_utils`` and
  rosinality's ``fid.py`` draw noise per image, so a score with the stored maps would not compare with
  published numbers. nat-gan draws it reproducibly: each batch's maps come from torch's RNG seeded with the
  batch's first seed (:class:`natgan.sampling.generate.ImageGenerator`), so ``sample --noise-mode random``
  writes exactly the images a metric scored with the same seeds and batch size.
* ``none`` disables noise.
"""

NOISE_MODES = ("const", "random", "none")
DEFAULT_NOISE_MODE = "const"       # sample, projections, walks, previews: an image per seed
METRIC_NOISE_MODE = "random"       # fid / eval.metrics: the published protocol
