"""Fault injection for tests and `cstvault bench reliability` (as SQLite's crash tests do).

`CSTVAULT_FAULT="POINT[:N[:ACTION]]"` in the environment makes the process, the N-th time
(default 1) it reaches the named point of a commit protocol, either die at once
(`kill`, the default: SIGKILL to itself, as a power cut or the OOM killer would) or fail as
a full disk would (`enospc`: OSError ENOSPC). Unset, `point` is a function that returns.
With `CSTVAULT_FAULT_ONCE=FILE` too, the fault fires only in the process that creates FILE
(a Dask worker restarted with the same environment then runs the task again unharmed).
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "CSTVAULT_FAULT"
ONCE_ENV = "CSTVAULT_FAULT_ONCE"

# every named point, in the order a store meets them
POINTS = (
    "create.catalog",  # store creation: catalog file opened, no table yet
    "create.done",  # catalog tables and version rows committed
    "index.frames_written",  # a batch's frames appended, not yet fsynced
    "index.frames_synced",  # frames and segment directory fsynced
    "index.txn_begun",  # the batch's catalog transaction begun, rows written
    "index.committed",  # the batch's transaction committed
    "symbols.compacted",  # recent symbols folded into blocks, before the commit
    "freeze.dictionaries",  # trained dictionaries committed
    "freeze.frames_written",
    "freeze.frames_synced",
    "freeze.txn_begun",
    "freeze.committed",
    "gc.orphans_dropped",  # orphan blobs deleted, committed
    "segments.deleted",  # one dead segment unlinked (freeze and gc)
    "segments.truncated",  # one unreferenced tail cut (gc)
    "pathindex.tmp_written",  # the new path index written and fsynced, not yet renamed
    "pathindex.renamed",  # renamed into place, the generation file not yet stamped
)
# per-file writes (live.py), exercised by `bench live`'s crash trials
LIVE_POINTS = (
    "live.journal_written",  # a commit's journal entries written, not yet fsynced
    "live.journaled",  # journal fsynced, its catalog transaction not yet committed
    "live.committed",  # the catalog transaction committed
    "live.rotated",  # checkpoint: a new journal begun, the old one not yet folded
    "live.replaying",  # an opener found unapplied journal entries, before applying them
    "live.replay_stored",  # replay: a torn group's files journaled again, not yet committed
)
# a sharded index's tasks (shards/build.py), exercised by tests/test_shards.py
SHARD_POINTS = ("shards.indexed",)  # a shard's files indexed, not yet frozen


def _parse(spec: str | None) -> tuple[str, int, str] | None:
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    count, _, action = rest.partition(":")
    known = POINTS + LIVE_POINTS + SHARD_POINTS
    if name not in known:
        raise ValueError(f"{ENV}: unknown point {name!r} (known: {', '.join(known)})")
    if action not in ("", "kill", "enospc"):
        raise ValueError(f"{ENV}: unknown action {action!r} (kill or enospc)")
    return name, int(count or 1), action or "kill"


_FAULT = _parse(os.environ.get(ENV))
_hits = [0]


def _point(name: str) -> None:
    assert _FAULT is not None
    if name != _FAULT[0]:
        return
    _hits[0] += 1
    if _hits[0] != _FAULT[1]:
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # fired already, in another process
    if _FAULT[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")


def _nothing(name: str) -> None:
    return None


point = _point if _FAULT is not None else _nothing
