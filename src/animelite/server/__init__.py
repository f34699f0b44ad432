"""``animelite serve``: the web page and HTTP API (FastAPI on uvicorn).

Needs the ``server`` extra (``pip install 'animelite[server]'``); the rest of
animelite imports without it.

>>> from animelite.server import ServerConfig, create_app    # doctest: +SKIP
>>> app = create_app(ServerConfig(models_dir="models", workers=2))   # doctest: +SKIP
"""

from __future__ import annotations

from .config import ConfigError, ServerConfig

__all__ = ["ServerConfig", "ConfigError", "create_app", "missing_dependencies", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'animelite[server]'"
_REQUIRED = ("fastapi", "uvicorn", "multipart", "prometheus_client")


def missing_dependencies() -> list[str]:
    """Names of the server extra's modules that cannot be imported."""
    import importlib.util

    return [name for name in _REQUIRED if importlib.util.find_spec(name) is None]


def create_app(config: ServerConfig | None = None):
    """Build the FastAPI app (imported lazily so ``animelite.server.config`` needs no FastAPI)."""
    from .app import create_app as _create_app

    return _create_app(config)
