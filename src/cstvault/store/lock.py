"""One writer at a time: an OS file lock on `writer.lock` in the store directory.

Every writing command and API (`index`, `freeze`, `gc`) holds it from its first write to
its end; readers never take it. It is a `flock`, so the kernel releases it when the holder
dies, however it dies. The holder writes its pid and command into the file, so that a
second writer can say who holds the store. Within one process a lock taken with
`joinable=True` (`cstvault index` holds one across its index and freeze steps) is joined by
the writers opened under it; any other second acquisition is refused like another
process's. A forked child (a worker process) closes its inherited copy, so that a worker
outliving a killed parent never keeps the store locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path

LOCK = "writer.lock"
POLL_S = 0.05


class StoreLocked(RuntimeError):
    """Another process is writing to the store."""


# realpath of a store directory -> [descriptor, holds, joinable]
_HELD: dict[str, list[int]] = {}


def _close_in_child() -> None:
    for fd, *_ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def command_line() -> str:
    """How this process was started, for the holder record (`cstvault index …`)."""
    argv = list(sys.argv) or ["python"]
    argv[0] = os.path.basename(argv[0])
    return " ".join(argv)[:300]


def holder(directory: Path) -> dict:
    """What the lock file says of its (last) holder: pid, command, since; {} if unreadable."""
    try:
        with open(directory / LOCK, encoding="utf-8") as f:
            data = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)  # type: ignore[call-overload]
    except (OSError, ValueError, TypeError):
        return False
    return True


def _describe(directory: Path) -> str:
    # the holder writes its record just after taking the lock: until then the file is empty
    # or names the previous holder, so look again for a moment
    for _ in range(20):
        h = holder(directory)
        if _alive(h.get("pid")):
            break
        time.sleep(0.01)
    who = f"pid {h['pid']}" if "pid" in h else "another process"
    if h.get("command"):
        who += f" ({h['command']})"
    return who


class WriterLock:
    """The store's writer lock, held until `release` (or the end of a `with` block)."""

    def __init__(self, directory: Path, wait: float = 0.0, *, joinable: bool = False):
        self.directory = Path(directory)
        self.key = os.path.realpath(self.directory)
        self.held = False
        self._acquire(max(0.0, wait), joinable)

    def _acquire(self, wait: float, joinable: bool) -> None:
        entry = _HELD.get(self.key)
        if entry is not None:
            if not entry[2]:
                raise StoreLocked(f"store {self.directory} is already being written by this "
                                  "process (another writing Store is open)")
            entry[1] += 1
            self.held = True
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    waited = f" (waited {wait:g} s)" if wait else ""
                    raise StoreLocked(
                        f"store {self.directory} is being written by {_describe(self.directory)}"
                        f"{waited}; one writer at a time: retry when it ends, or pass "
                        "--wait SECONDS"
                    ) from None
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
            except OSError:
                os.close(fd)
                raise
        info = {"pid": os.getpid(), "command": command_line(), "since": round(time.time(), 3)}
        record = json.dumps(info).encode()
        os.pwrite(fd, record, 0)  # one write, then the old record's tail cut
        os.ftruncate(fd, len(record))
        _HELD[self.key] = [fd, 1, int(joinable)]
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        entry = _HELD.get(self.key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD[self.key]
            os.close(entry[0])  # closing the only descriptor releases the flock

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_here(directory: Path) -> bool:
    """Whether this process holds the store's writer lock."""
    return os.path.realpath(directory) in _HELD
