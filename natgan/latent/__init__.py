"""Working with the latent space of any registered generator, through the generator contract only:
projection of real images (:mod:`~natgan.latent.project`), style mixing (:mod:`~natgan.latent.mixing`),
latent walks for videos (:mod:`~natgan.latent.walk`), SeFa directions (:mod:`~natgan.latent.sefa`) and
latents on disk (:mod:`~natgan.latent.store`)."""

from natgan.latent.project import ProjectionResult, ProjectionSettings, load_target, project
from natgan.latent.sefa import Directions, factorize, load_direction
from natgan.latent.store import StoredLatents, load_latents, save_latents

__all__ = ["Directions", "ProjectionResult", "ProjectionSettings", "StoredLatents", "factorize", "load_direction",
           "load_latents", "load_target", "project", "save_latents"]
