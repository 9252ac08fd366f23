"""Keep clean-fid's own Fréchet distance working on SciPy >= 1.18.

clean-fid 0.1.35 (the newest release) calls ``scipy.linalg.sqrtm(A, disp=False)``; SciPy deprecated
``disp`` in 1.16 and removed it in 1.18, where every FID (nat-gan's and clean-fid's folder path alike)
fails with ``TypeError: sqrtm() got an unexpected keyword argument 'disp'``. nat-gan deliberately scores
with clean-fid's function so that its numbers equal clean-fid's, so instead of re-deriving the formula we
give clean-fid's module a ``linalg`` whose ``sqrtm`` accepts ``disp`` again. ``disp=False`` returned
``(root, error estimate)``; clean-fid discards the estimate, and so do we (None).
"""

from __future__ import annotations

import inspect
import types

from scipy import linalg as _scipy_linalg


def _sqrtm(A, disp: bool = True, **kwargs):
    root = _scipy_linalg.sqrtm(A, **kwargs)
    return root if disp else (root, None)


def sqrtm_takes_disp() -> bool:
    try:
        return "disp" in inspect.signature(_scipy_linalg.sqrtm).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C function without a signature
        return True


def install(force: bool = False) -> bool:
    """Point ``cleanfid.fid.linalg`` at the shim when this SciPy's ``sqrtm`` lacks ``disp``; True if done."""
    from cleanfid import fid as cleanfid_fid

    if not force and sqrtm_takes_disp():
        return False
    if getattr(cleanfid_fid.linalg, "natgan_shim", False):
        return True
    shim = types.SimpleNamespace(**{n: getattr(_scipy_linalg, n) for n in dir(_scipy_linalg) if not n.startswith("__")})
    shim.sqrtm = _sqrtm
    shim.natgan_shim = True
    cleanfid_fid.linalg = shim
    return True
