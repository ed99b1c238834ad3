"""State after a token is issued: the store contract and its backends (SQLite, Redis).

Start with :func:`open_store` and the :class:`StateStore` contract in :mod:`.store`.
"""

from __future__ import annotations

from .backends import open_store
from .store import Batch, StateStore, StoreUnavailable, StoreURLError, Window, WindowHit, redact_url

__all__ = ["Batch", "StateStore", "StoreURLError", "StoreUnavailable", "Window", "WindowHit", "open_store",
           "redact_url"]
