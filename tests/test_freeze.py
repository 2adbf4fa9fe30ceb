"""Freeze: fast frames recompressed to zstd-19 with nothing lost, crash-safe, reader-safe."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import cstvault
from cstvault import indexer
from cstvault.freeze import freeze
from cstvault.verify import verify_store

CHILD = textwrap.dedent(
    """
    import sys
    from cstvault import freeze
    freeze.BATCH_BLOBS = 5
    print("GO", flush=True)
    freeze.freeze(sys.argv[1], jobs=1, progress=lambda d, t: print(d, flush=True))
    print("DONE", flush=True)
    """
)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for i in range(60):
        body = "".join(f"def h{i}_{k}(y):\n    return {{y: {k}}}\n\n" for k in range(5 + i % 11))
        (root / f"m{i:02d}.py").write_text(body)
    return root


def frame_bytes(store) -> int:
    c = store.stats()
    return c["tree_frame_bytes"] + c["source_frame_bytes"]


def test_index_writes_fast_frames_and_freeze_makes_them_zstd19(repo, tmp_path):
    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=2)
    with cstvault.open(store_dir) as store:
        assert store.stats()["levels"] == {str(indexer.INDEX_LEVEL): 60}
        fast = frame_bytes(store)
        texts = {f.path: store.tree(f.path).text for f in store.files()}
    report = freeze(store_dir, jobs=2)
    assert report.blobs == 60 and report.bytes_after < report.bytes_before
    with cstvault.open(store_dir) as store:
        assert store.stats()["levels"] == {"19": 60}
        assert frame_bytes(store) < fast
        assert verify_store(store).mismatched == 0
        assert {f.path: store.tree(f.path).text for f in store.files()} == texts
        assert store.files_with_symbol("h3_2") == ["m03.py"]
        seg_files = sorted(p.name for p in store._segment_files())
    assert freeze(store_dir).blobs == 0  # nothing left to do
    # superseded segments are gone: what remains holds only zstd-19 frames
    with cstvault.open(store_dir) as store:
        assert sorted(p.name for p in store._segment_files()) == seg_files
        assert store.segment_bytes() == frame_bytes(store)


def test_open_reader_survives_a_concurrent_freeze(repo, tmp_path):
    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1)
    with cstvault.open(store_dir, cstvault.CacheConfig(max_memory_mb=0)) as reader:
        before = reader.tree("m07.py").text  # maps a segment that freeze will delete
        freeze(store_dir, jobs=1)
        assert reader.tree("m07.py").text == before
        assert reader.source("m08.py") == (repo / "m08.py").read_bytes()


def test_sigkill_during_freeze_then_resume(repo, tmp_path):
    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1)
    for wait_batches in (1, 4, 9):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(store_dir)],
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "GO"
        for _ in range(wait_batches):
            if not child.stdout.readline():
                break
        time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.communicate()
        with cstvault.open(store_dir) as store:
            assert len(list(store.files())) == 60
            assert verify_store(store).mismatched == 0
    freeze(store_dir, jobs=1)
    with cstvault.open(store_dir) as store:
        assert store.stats()["levels"] == {"19": 60}
        assert verify_store(store).mismatched == 0
        store.gc()
        assert store.segment_bytes() == frame_bytes(store)


def test_freeze_honours_the_disk_quota(repo, tmp_path, monkeypatch):
    monkeypatch.setattr("cstvault.freeze.BATCH_BLOBS", 10)
    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1)
    with cstvault.open(store_dir) as store:
        used = store.segment_bytes()
    # old and new frames coexist until a batch's old segments are dropped: no room for that
    with pytest.raises(indexer.DiskQuotaExceeded, match="freezing 10 blobs"):
        freeze(store_dir, jobs=1, disk_quota_mb=used / 2**20)
    with cstvault.open(store_dir) as store:
        assert store.segment_bytes() <= used
        assert store.stats()["levels"] == {str(indexer.INDEX_LEVEL): 60}  # nothing moved
        assert verify_store(store).mismatched == 0
    assert freeze(store_dir, jobs=1, disk_quota_mb=2 * used / 2**20).blobs == 60


def test_the_quota_given_to_index_is_kept_and_enforced_later(repo, tmp_path):
    from click.testing import CliRunner

    from cstvault.cli import main

    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1, disk_quota_mb=1)
    with cstvault.open(store_dir) as store:
        assert store.catalog.disk_quota() == 2**20
        used = store.segment_bytes()
    rng = random.Random(7)
    for i in range(40):  # random names and numbers: megabytes even compressed
        lines = (f"v{rng.getrandbits(64):x} = {rng.getrandbits(64)}\n" for _ in range(2000))
        (repo / f"big{i:02d}.py").write_text("".join(lines))
    res = CliRunner().invoke(main, ["index", str(repo), "--store", str(store_dir), "-j", "1"])
    assert res.exit_code == 1 and "disk quota of 1,048,576 bytes (1.00 MiB)" in res.output
    assert "kept for freezing" in res.output and "Traceback" not in res.output
    with cstvault.open(store_dir) as store:
        assert used < store.segment_bytes() <= 2**20 - indexer.SEGMENT_LIMIT
        assert verify_store(store).mismatched == 0


@pytest.mark.parametrize("quota_mb", [0.35, 0.5, 0.8])
def test_a_store_indexed_under_a_quota_can_always_be_frozen(repo, tmp_path, quota_mb):
    rng = random.Random(quota_mb)
    for i in range(30):  # random names and numbers: compress poorly
        lines = (f"v{rng.getrandbits(64):x} = {rng.getrandbits(64)}\n" for _ in range(600))
        (repo / f"big{i:02d}.py").write_text("".join(lines))
    store_dir = tmp_path / "s"
    with contextlib.suppress(indexer.DiskQuotaExceeded):  # what fits is committed
        indexer.index(repo, store_dir, jobs=1, disk_quota_mb=quota_mb)
    report = freeze(store_dir, jobs=1)  # under the same quota, kept in the store
    assert report.blobs > 0
    with cstvault.open(store_dir) as store:
        assert set(store.stats()["levels"]) == {"19"}
        assert store.segment_bytes() <= quota_mb * 2**20
        assert verify_store(store).mismatched == 0


def test_freeze_compacts_what_an_uncompacted_index_left(repo, tmp_path):
    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1, compact=False)
    with cstvault.open(store_dir) as store:
        db = store.catalog.db
        assert db.execute("SELECT count(*) FROM symbol_blocks").fetchone()[0] == 0
        assert store.files_with_symbol("h7_3") == ["m07.py"]  # answered from the runs
    freeze(store_dir, jobs=1)
    with cstvault.open(store_dir) as store:
        db = store.catalog.db
        assert db.execute("SELECT count(*) FROM symbol_runs").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM symbol_texts").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM symbol_blocks").fetchone()[0] > 0
        assert store.files_with_symbol("h7_3") == ["m07.py"]
