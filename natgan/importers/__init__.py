"""Converters from other projects' checkpoint formats into nat-gan checkpoint format v1."""

from natgan.importers.official import import_official, load_official_container

__all__ = ["import_official", "load_official_container"]
