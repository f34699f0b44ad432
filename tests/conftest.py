"""Shared fixtures.

The real weights and photos live in ``../shared`` beside the checkout (CI has
it). Tests find it relative to the repository, or through ``ANIMELITE_SHARED``;
tests that need it are skipped when it is absent, so the suite also passes on
a bare machine with only synthetic models.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_root() -> Path | None:
    env = os.environ.get("ANIMELITE_SHARED")
    root = Path(env) if env else REPO.parent / "shared"
    return root if (root / "models").is_dir() else None


SHARED = _shared_root()
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared (real weights and photos) is not present")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if SHARED is None:
        pytest.skip("../shared (real weights and photos) is not present")
    return SHARED


@pytest.fixture(scope="session")
def shared_models(shared_dir: Path) -> Path:
    return shared_dir / "models"


@pytest.fixture(scope="session")
def shared_photos(shared_dir: Path) -> Path:
    return shared_dir / "photos"
