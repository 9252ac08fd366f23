"""Where the official StyleNAT/StyleSwin fixtures live (``../shared`` beside the checkout) and the marker for
tests that need them.

Outside CI a checkout without ``../shared`` skips those tests with the reason. In CI (``CI`` set) they never
skip: a missing folder makes them fail loudly, so the importer's ground-truth checks cannot vanish silently.
"""

import os
from pathlib import Path

import pytest

OFFICIAL = Path(__file__).resolve().parents[2] / "shared/fixtures/official"

requires_official = pytest.mark.skipif(not OFFICIAL.is_dir() and not os.environ.get("CI"),
                                       reason=f"official fixtures not found at {OFFICIAL} (in CI this fails)")
