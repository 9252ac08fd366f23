"""`nat-gan studio`: look inside checkpoints interactively in a browser.

The logic lives here, free of any web framework, so it is testable without a browser:

* :mod:`natgan.studio.catalog`  which checkpoints the command was given (run directories expanded, newest first);
* :mod:`natgan.studio.spec`     the page's latent controls as one validated value (seed with fractional blend,
  psi, noise mode, style mixing, direction strengths, a projected latent) and the ``w`` it names;
* :mod:`natgan.studio.session`  loaded generators (cached), rendering, SeFa per checkpoint, attention, projection,
  one generation at a time per device;
* :mod:`natgan.studio.capture`  the PNG, the latent ``.npz`` and the exact ``nat-gan sample`` command that writes
  the same PNG;
* :mod:`natgan.studio.app` / :mod:`natgan.studio.server`  the Gradio page and serving it (the optional
  ``nat-gan[studio]`` extra; nothing else here imports Gradio).
"""
