"""Peak RSS of a process and all its descendants, sampled (Linux /proc), never estimated."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
EVERY = 0.02  # seconds between samples


def tree_rss(pid: int) -> int:
    """Summed RSS of `pid` and every process below it (shared pages count in each)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            continue  # gone between two reads
    return total


class Sampler:
    """Samples `tree_rss(pid)` every EVERY seconds in a thread; `peak` in bytes."""

    def __init__(self, pid: int | None = None):
        self.pid = os.getpid() if pid is None else pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(EVERY)

    def __enter__(self) -> Sampler:
        self.peak = tree_rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))  # 0 once the process has gone


def run_sampled(args: list[str], what: str, cwd: Path | None = None) -> tuple[str, int, float]:
    """Run `cstvault *args` in a new process: (stdout, peak RSS of its tree, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cstvault.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    with sampler:
        out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{err.strip()[-3000:]}")
    return out, sampler.peak, seconds
