"""What prometheus-client's own metrics hold after a set of decisions: the reference the
service's hand-kept metrics are compared with (tests/test_server_fastpath.py, in-process and in
child processes for the multiprocess mode)."""

from __future__ import annotations

from typing import Any

# (policy, allow, step_up, access_ttl, refresh_ttl, matched, seconds): values on bucket bounds,
# between them, beyond the last one; two policies.
SAMPLES = [("a", True, False, 3600, 0, ["r1", "r2"], 0.0001), ("a", False, False, 0, 0, [], 0.3),
           ("b", True, True, 61, 2592000, ["r1"], 0.00001), ("a", True, True, 99999999, 86400, ["r2"], 2.0),
           ("b", True, False, 60, 60, [], 0.00025)]


def observe(decisions: Any, rules: Any, access: Any, refresh: Any, latency: Any) -> None:
    """Record every sample of :data:`SAMPLES` on prometheus-client's counters and histograms."""
    for policy, allow, step_up, access_ttl, refresh_ttl, matched, seconds in SAMPLES:
        decisions.labels(policy, "deny" if not allow else "step_up" if step_up else "allow").inc()
        for rule in matched:
            rules.labels(policy, rule).inc()
        access.labels(policy).observe(access_ttl)
        refresh.labels(policy).observe(refresh_ttl)
        latency.observe(seconds)
