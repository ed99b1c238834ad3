"""What happens after issuance: events, shared security signals, activity and its detectors."""

from __future__ import annotations
