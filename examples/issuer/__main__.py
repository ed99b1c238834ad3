"""``python -m examples.issuer --port 9000`` (from the repository root)."""

from __future__ import annotations

from examples.issuer.app import main

main()
