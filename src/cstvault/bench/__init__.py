"""Benchmarks: `cstvault bench corpus | codec | store | phases`."""

from __future__ import annotations

import subprocess
import sys


def fresh_process(args: list[str], what: str) -> str:
    """Run `python *args` in a new process and return the last line it printed."""
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{res.stderr.strip()[-3000:]}")
    return res.stdout.strip().splitlines()[-1]


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (/proc/stat jiffies: user nice system idle iowait irq
    softirq steal ...), None where unavailable."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def steal_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of the machine's CPU time taken by the hypervisor between two `cpu_times()`
    (a VM's "steal": the figure to read timings on a shared host against)."""
    if not before or not after or len(before) < 8:
        return None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta[:8])
    return round(100.0 * delta[7] / total, 2) if total else None
