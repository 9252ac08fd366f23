"""Converters from other projects' checkpoint formats into nat-gan checkpoint format v1.

One module per format (``official``: StyleNAT/StyleSwin, ``rosinality``, ``stylegan2_ada``, ``ganformer``), the
reader of NVlabs snapshots (``nvlabs_pickle``, which gives ``nvlabs_records``), shared helpers in
``common``/``stylegan2_family``, and ``dispatch`` choosing by ``--from`` (dispatch imports the formats; none of
them imports dispatch).
"""

from natgan.importers.common import load_official_container
from natgan.importers.dispatch import KINDS, detect_format, import_checkpoint
from natgan.importers.official import import_official

__all__ = ["KINDS", "detect_format", "import_checkpoint", "import_official", "load_official_container"]
