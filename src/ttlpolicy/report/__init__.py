"""The usage report over decision logs and event logs: JSON for programs, one HTML file for people."""

from __future__ import annotations

from .collect import build_report
from .html import render_html

__all__ = ["build_report", "render_html"]
