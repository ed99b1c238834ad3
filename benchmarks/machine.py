"""What a results page says about the machine it was measured on.

Every benchmark writes its numbers down with the machine, the versions and the load: these
machines are shared and noisy, so a reader compares rows of one run and needs to know what ran.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path


def _first_line(path: str, prefix: str) -> str | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(prefix)), None)


def tool_version(command: list[str]) -> str:
    """The first line a tool prints about its version, or that it is not installed."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return f"{command[0]}: not installed"
    return (out.stdout or out.stderr).split("\n")[0].strip() or f"{command[0]}: unknown"


def describe(packages: tuple[str, ...], tools: tuple[tuple[str, ...], ...] = ()) -> dict[str, str]:
    """CPU, cores, memory, Python, OS, package and tool versions, the date and the load average."""
    mem_kb = int((_first_line("/proc/meminfo", "MemTotal") or "0 kB").split()[0])
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return {"cpu": _first_line("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
            "cores": str(os.cpu_count()), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "os": platform.platform(), "packages": ", ".join(versions),
            "tools": "; ".join(tool_version(list(command)) for command in tools),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load": " / ".join(f"{x:.2f}" for x in os.getloadavg())}
