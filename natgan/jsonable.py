"""The one ``json.dumps(default=...)`` hook: numpy/torch scalars and arrays as JSON numbers and lists.

Why a module of its own: results (metrics, benchmarks) carry numpy and torch numbers, and both the CLI's
``--json`` output and files written beside checkpoints serialise them; neither may depend on the other.
"""

from __future__ import annotations

from typing import Any


def jsonable(obj: Any) -> Any:
    """A scalar's ``item()``, an array's ``tolist()``, else ``str(obj)``."""
    if hasattr(obj, "item"):
        try:
            return obj.item()
        except (ValueError, RuntimeError):  # an array of more than one element: a list
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
