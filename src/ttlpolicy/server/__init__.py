"""The decision service: ``create_app(settings)`` builds the Starlette app that ``ttlpolicy serve`` runs.

Names are resolved lazily so that ``ttlpolicy serve`` can read its settings (and set
``PROMETHEUS_MULTIPROC_DIR`` for several workers) before prometheus-client is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .config import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app
        return create_app
    if name in ("ConfigError", "Settings", "load_settings"):
        from . import config
        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
