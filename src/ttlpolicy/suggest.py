"""``did you mean ...?`` for a misspelt name: one close match among the names that would be valid."""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, candidates: Iterable[str], quote: bool = True) -> str:
    """``" — did you mean 'access_ttl'?"`` when one candidate is close to ``name``, else ``""``.

    >>> did_you_mean("acces_ttl", ["access_ttl", "refresh_ttl"])
    " — did you mean 'access_ttl'?"
    """
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        return ""
    return f" — did you mean {close[0]!r}?" if quote else f" — did you mean {close[0]}?"
