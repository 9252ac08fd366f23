"""The noise modes of generators with per-pixel noise inputs (StyleGAN2, GANformer), and the one default.

A module of its own (no torch import) so the CLI can declare its options without loading torch.
``const``, the default for ``sample``, ``fid`` and the trainer's FID, uses each layer's fixed noise
buffer: an image is then a function of its seed alone, so samples are reproducible and an FID does not
depend on the batch size. ``random`` (NVIDIA's metrics) draws noise per batch; ``none`` disables it.
"""

NOISE_MODES = ("const", "random", "none")
DEFAULT_NOISE_MODE = "const"
