"""Alerts out: signed webhooks (Standard Webhooks) for what the service sees and does."""

from __future__ import annotations

from .webhooks import (
    ALERT_TYPES,
    WebhookDispatcher,
    WebhookEndpoint,
    WebhookSettings,
    parse_secret,
    sign,
)

__all__ = ["ALERT_TYPES", "WebhookDispatcher", "WebhookEndpoint", "WebhookSettings", "parse_secret", "sign"]
