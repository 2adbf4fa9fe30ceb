"""Crash trials for per-file writes: a child process writes (updates, edits, removals,
checkpoints) and prints each write it was acknowledged; the parent SIGKILLs it at a random
moment (or a fault point kills it), reopens the store and checks that every acknowledged
write is there and that the store opens and verifies."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import crc32c

FILES = 6


def make_root(root: Path) -> None:
    """A small tree of Python files, indexed."""
    from .. import indexer

    root.mkdir(parents=True, exist_ok=True)
    for k in range(FILES):
        (root / f"m{k}.py").write_text(f"def f{k}(x):\n    return x + {k}\n")
    indexer.index(root, compact=False)


def child(root: str, seed: int, durability: str) -> None:
    """Write forever; print `{"path", "version", "crc"}` once each write is acknowledged."""
    import cstvault

    rng = random.Random(seed)
    store = cstvault.open(root, write=True, durability=durability, batch_entries=8,
                          batch_ms=5.0, keep_versions=64)  # fmt: skip
    texts = {f"m{k}.py": store.source(f"m{k}.py") for k in range(FILES)}
    pending: dict[str, bytes] = {}
    k = 0
    while True:
        k += 1
        path = f"m{rng.randrange(FILES)}.py"
        op = rng.random()
        if op < 0.4:
            text = texts[path] + f"x{k} = {k}\n".encode()
            Path(root, path).write_bytes(text)
            version = store.update(path)
            if durability == "batch":  # durable at the group's commit
                pending[path] = (version, text)
            else:
                _ack(path, version, text, pending)
        elif op < 0.9:
            at = len(texts[path])
            text = texts[path] + f"# e{k}\n".encode()
            version = store.apply_edit(path, at, at, len(text), text[at:])
            if durability == "batch":
                pending[path] = (version, text)
            else:
                _ack(path, version, text, {})
        elif op < 0.97 or durability == "batch":
            if pending:
                store.sync()
                for p, (v, t) in sorted(pending.items()):
                    _ack(p, v, t, {})
                pending.clear()
            continue
        else:
            store.checkpoint()
            continue
        texts[path] = text


def _ack(path: str, version: int, text: bytes, pending: dict) -> None:
    pending.pop(path, None)
    print(json.dumps({"path": path, "version": version, "crc": crc32c.crc32c(text)}), flush=True)


_REOPEN = "import sys, cstvault; cstvault.open(sys.argv[1], write=True).close()"


def trial(root: Path, seed: int, *, fault: str | None = None, durability: str = "commit",
          kill_after: float | None = None,
          replay_kill: float | str | None = None) -> dict:  # fmt: skip
    """One trial on `root` (made by make_root, reused across trials): run the child until
    killed, then check. `replay_kill`: before the check, a second process opens the store
    (replaying the journal) and is killed too: after that many seconds, or at the fault
    point "live.replaying" when it is "fault". Returns {acknowledged, lost, failed_open,
    failed_verify, error, recovery}."""
    import cstvault

    from .. import faults
    from ..verify import verify_store

    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault:
        env[faults.ENV] = fault
    code = ("import sys; from cstvault.bench.live_crash import child; "
            f"child({str(root)!r}, {seed}, {durability!r})")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)  # fmt: skip
    if fault is None:
        time.sleep(kill_after if kill_after is not None else random.Random(seed).uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
    else:  # the point kills it; one its writes may never reach (a replay) leaves it 3 s
        try:
            proc.wait(timeout=kill_after if kill_after is not None else 3.0)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    if replay_kill is not None:
        renv = dict(env, **({faults.ENV: "live.replaying:1"} if replay_kill == "fault" else {}))
        if replay_kill != "fault":
            renv.pop(faults.ENV, None)
        again = subprocess.Popen([sys.executable, "-c", _REOPEN, str(root)], env=renv,
                                 stderr=subprocess.PIPE)  # fmt: skip
        if replay_kill != "fault":
            time.sleep(float(replay_kill))
            again.send_signal(signal.SIGKILL)
        again.communicate(timeout=120)
        replay_killed = again.returncode == -signal.SIGKILL
    else:
        replay_killed = False
    acked: dict[str, dict] = {}
    for line in out.decode().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        acked[rec["path"]] = rec
    result = {"acknowledged": len(out.splitlines()), "lost": 0, "failed_open": 0,
              "failed_verify": 0, "error": "", "recovery": None,
              "replay_killed": replay_killed}  # fmt: skip
    if proc.returncode not in (-signal.SIGKILL, 0):
        result["error"] = err.decode()[-2000:]
    try:
        store = cstvault.open(root)
    except Exception as exc:  # noqa: BLE001 - any failure to open is what we count
        result["failed_open"] = 1
        result["error"] = repr(exc)
        return result
    with store:
        result["recovery"] = store.recovery
        for path, rec in acked.items():
            try:
                text = store.source(path, version=rec["version"])
                ok = crc32c.crc32c(text) == rec["crc"]
            except (KeyError, ValueError) as exc:
                ok = False
                result["error"] = repr(exc)
            result["lost"] += not ok
        try:
            report = verify_store(store)
            result["failed_verify"] = int(report.mismatched > 0)
        except Exception as exc:  # noqa: BLE001
            result["failed_verify"] = 1
            result["error"] = repr(exc)
    return result
