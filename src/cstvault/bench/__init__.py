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
