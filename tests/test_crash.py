"""Crash safety: SIGKILL an indexer at random moments; the store must open, verify, and hold
every file whose commit finished; gc reclaims the unreferenced tails; a rerun completes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import cstvault
from cstvault import indexer
from cstvault.store import Store
from cstvault.verify import verify_store

TRIALS = 20
FILES = 360  # so that a kill after up to KILL_AFTER commits lands mid-run even on a fast CI
KILL_AFTER = 250
CHILD = textwrap.dedent(
    """
    import sys
    from cstvault import indexer

    def committed(paths):
        sys.stdout.write("".join(p + "\\n" for p in paths))
        sys.stdout.flush()

    print("GO", flush=True)
    indexer.index(sys.argv[1], sys.argv[2], jobs=1, batch_files=7, on_commit=committed)
    print("DONE", flush=True)
    """
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("crashrepo")
    for i in range(FILES):
        body = "".join(f"def g{i}_{k}(x):\n    return [x] * {k}\n\n" for k in range(3 + i % 17))
        (root / f"f{i:03d}.py").write_text(body)
    return root


def _start(repo, store_dir):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(repo), str(store_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "GO"
    return child


def test_sigkill_at_random_moments(repo, tmp_path):
    rng = random.Random(20261122)
    killed_mid_run = 0
    for trial in range(TRIALS):
        store_dir = tmp_path / f"store{trial}"
        child = _start(repo, store_dir)
        # let a random number of files commit, then kill at a random instant soon after
        assert child.stdout is not None
        seen: list[str] = []
        for _ in range(rng.randrange(0, KILL_AFTER)):
            line = child.stdout.readline()
            if not line or line.strip() == "DONE":
                break
            seen.append(line.strip())
        time.sleep(rng.uniform(0.0, 0.01))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
        lines = seen + out.splitlines()
        committed = [line for line in lines if line and line != "DONE"]
        killed_mid_run += "DONE" not in lines
        if not (store_dir / "catalog.sqlite").exists():
            assert not committed
            continue
        with cstvault.open(store_dir) as store:
            stored = {f.path for f in store.files()}
            assert set(committed) <= stored  # nothing committed was lost
            report = verify_store(store)
            assert report.mismatched == 0, report.mismatches
            for path in stored:
                assert store.tree(path).text == (repo / path).read_bytes()
            store.gc()
        indexer.index(repo, store_dir, jobs=1)  # resume to completion
        with cstvault.open(store_dir) as store:
            assert {f.path for f in store.files()} == {f"f{i:03d}.py" for i in range(FILES)}
            assert verify_store(store).mismatched == 0
    assert killed_mid_run >= TRIALS - 3  # the kills really landed mid-run


def test_gc_reclaims_an_unreferenced_tail(repo, tmp_path):
    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1)
    with Store.open(store_dir, write=True) as store:
        writer = store.writer()
        writer.append(b"garbage of a batch that never committed" * 100)
        writer.sync()
        before = store.segment_bytes()
        out = store.gc()
        assert out["bytes_freed"] >= 3900 and store.segment_bytes() < before
        assert verify_store(store).mismatched == 0


def test_disk_quota_is_enforced(repo, tmp_path):
    with pytest.raises(indexer.DiskQuotaExceeded, match="disk quota"):
        indexer.index(repo, tmp_path / "q", jobs=1, disk_quota_mb=0.01)
    with cstvault.open(tmp_path / "q") as store:
        assert store.segment_bytes() <= 0.01 * 1024 * 1024
        assert verify_store(store).mismatched == 0
