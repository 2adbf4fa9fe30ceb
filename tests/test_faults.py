"""Faults on purpose: a kill at every named commit point, a full disk, a half-created store,
two writers at once, flipped bytes and rewritten sources (the fast part of
`cstvault bench reliability`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import cstvault
from cstvault import faults
from cstvault.bench import reliability
from cstvault.store.pathindex import INDEX
from cstvault.verify import verify_store


def test_the_reliability_suite_fast_part(tmp_path):
    out = reliability.run(tmp_path / "work", files=100, repeats=1, random_kills=6, flips=60,
                          rewrites=1)  # fmt: skip
    assert out["kill_trials"] == len(faults.POINTS)
    assert all(p["landed"] == 1 for p in out["kill_points"].values()), out["kill_points"]
    assert out["writer_pairs"] == 18 and out["byte_flips"] == 60 and out["inplace_rewrites"]
    figures = {k: out[k] for k in reliability.Trials.KEYS}
    assert figures == dict.fromkeys(reliability.Trials.KEYS, 0), out["failures"]
    assert out["undocumented_errors"] == []


def _cli(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault:
        env[faults.ENV] = fault
    return subprocess.run([sys.executable, "-m", "cstvault.cli", *args], capture_output=True,
                          text=True, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("faultrepo")
    reliability.make_repo(root, files=60)
    return root


def _no_uncommitted_bytes(store_dir) -> None:
    """Every segment ends with its last referenced frame: nothing was left behind."""
    with cstvault.open(store_dir) as store:
        ends = store.catalog.referenced_segment_ends()
        for seg in (store_dir / "segments").glob("*.seg"):
            assert ends.get(int(seg.stem)) == seg.stat().st_size, seg.name
        assert verify_store(store).mismatched == 0
    assert not (store_dir / (INDEX + ".tmp")).exists()


@pytest.mark.parametrize("fault", ["index.frames_synced:1:enospc", "index.txn_begun:1:enospc",
                                   "pathindex.tmp_written:1:enospc"])  # fmt: skip
def test_a_full_disk_while_indexing_is_one_line_and_leaves_nothing(repo, tmp_path, fault):
    store_dir = tmp_path / "s"
    res = _cli(["index", str(repo), "--store", str(store_dir), "-j", "1", "--no-freeze"], fault)
    if fault.startswith("pathindex"):  # the path index is a cache: the run still succeeds
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode == 1
        assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
        assert "no space left on the device" in res.stderr
    _no_uncommitted_bytes(store_dir)
    assert _cli(["index", str(repo), "--store", str(store_dir), "-j", "1"]).returncode == 0
    _no_uncommitted_bytes(store_dir)


def test_a_full_disk_while_freezing_is_one_line_and_leaves_nothing(repo, tmp_path):
    store_dir = tmp_path / "s"
    assert _cli(["index", str(repo), "--store", str(store_dir), "-j", "1",
                 "--no-freeze"]).returncode == 0  # fmt: skip
    res = _cli(["freeze", "--store", str(store_dir), "-j", "1"], "freeze.frames_synced:1:enospc")
    assert res.returncode == 1 and "no space left on the device" in res.stderr
    assert "Traceback" not in res.stderr
    _no_uncommitted_bytes(store_dir)
    assert _cli(["freeze", "--store", str(store_dir), "-j", "1"]).returncode == 0
    with cstvault.open(store_dir) as store:
        assert set(store.stats()["levels"]) == {"19"}


def test_a_store_killed_while_being_created_says_so(repo, tmp_path):
    store_dir = tmp_path / "s"
    res = _cli(["index", str(repo), "--store", str(store_dir)], "create.catalog")
    assert res.returncode == -9
    res = _cli(["stats", "--store", str(store_dir)])
    assert res.returncode == 1 and "incomplete (its creation was interrupted)" in res.stderr
    assert "re-run `cstvault index`" in res.stderr
    assert _cli(["index", str(repo), "--store", str(store_dir), "-j", "1"]).returncode == 0
    assert _cli(["stats", "--store", str(store_dir)]).returncode == 0


def test_a_real_full_disk(repo, tmp_path):
    """On a 512 KiB tmpfs (needs the right to mount; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True
    ).returncode:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here")
    try:
        big = tmp_path / "big"
        reliability.make_repo(big, files=400, seed=3)
        res = _cli(["index", str(big), "--store", str(mnt / "s"), "-j", "1"])
        assert res.returncode == 1, res.stderr
        assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
        assert "no space left on the device" in res.stderr
        with cstvault.open(mnt / "s") as store:  # what committed (if anything) is intact
            assert verify_store(store).mismatched == 0
            for f in store.files():
                assert store.source(f.path) == (big / f.path).read_bytes()
        assert not list(mnt.glob("s/*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_unknown_fault_specs_are_refused():
    with pytest.raises(ValueError, match="unknown point"):
        faults._parse("nowhere:1")
    with pytest.raises(ValueError, match="unknown action"):
        faults._parse("index.committed:1:explode")
    assert faults._parse("index.committed") == ("index.committed", 1, "kill")


def _raw_sql(store_dir, sql: str, args=()) -> None:
    import sqlite3

    con = sqlite3.connect(store_dir / "catalog.sqlite")
    con.execute(sql, args)
    con.commit()
    con.close()


def test_damaged_catalog_rows_are_detected_and_reindexing_repairs_them(repo, tmp_path):
    from cstvault import indexer
    from cstvault.codec import CorruptRecord

    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1)
    (store_dir / INDEX).unlink()  # readers ask the catalog
    with cstvault.open(store_dir) as store:
        paths = sorted(f.path for f in store.files())
        a, b = paths[0], paths[1]
        blob_b = store.catalog.blob_for(b)[0].id
        (symbol_path,) = store.files_with_symbol("f0_1")
    # a row pointing at another file's blob (as a flipped byte would), written behind the
    # catalog's back: its row check no longer matches
    _raw_sql(store_dir, "UPDATE files SET blob = ? WHERE name = ?", (blob_b, a.split("/")[-1]))
    with cstvault.open(store_dir) as store:
        with pytest.raises(CorruptRecord, match="catalog row is damaged"):
            store.tree(a)
        with pytest.raises(CorruptRecord, match="catalog row is damaged"):
            list(store.files())
    indexer.index(repo, store_dir, jobs=1)  # the damaged row counts as changed: rewritten
    with cstvault.open(store_dir) as store:
        assert store.source(a) == (repo / a).read_bytes()
        assert sorted(f.path for f in store.files()) == paths
    # a row gone without a trace (a damaged B-tree page drops cells silently)
    _raw_sql(store_dir, "DELETE FROM files WHERE name = ?", (symbol_path.split("/")[-1],))
    (store_dir / INDEX).unlink()
    with cstvault.open(store_dir) as store:
        with pytest.raises(CorruptRecord, match="list of files does not match"):
            list(store.files())
        with pytest.raises(CorruptRecord, match="do not match its digest"):
            store.files_with_symbol("f0_1")


def test_a_listing_is_one_snapshot_while_a_writer_commits(repo, tmp_path):
    from cstvault import indexer
    from cstvault.store import Store

    store_dir = tmp_path / "s"
    indexer.index(repo, store_dir, jobs=1)
    with cstvault.open(store_dir) as reader, Store.open(store_dir, write=True) as writer:
        listing = reader.files()
        first = next(listing)
        blob = writer.catalog.blob_for(first.path)[0].id
        writer.catalog.begin()
        writer.catalog.put_file("new/file.py", blob, 1, 2)
        writer.catalog.commit()
        rest = [f.path for f in listing]  # no spurious digest error: the snapshot it began in
        assert "new/file.py" not in rest and len(rest) + 1 == 60
        assert "new/file.py" in {f.path for f in reader.files()}


def test_storage_errors_are_one_line():
    import errno
    import sqlite3

    from cstvault.cli import storage_error

    full = storage_error(OSError(errno.ENOSPC, "No space left on device", "/s/segments/1.seg"))
    assert full.startswith("no space left on the device (/s/segments/1.seg)")
    assert "store is as of its last commit" in full
    assert storage_error(sqlite3.OperationalError("database or disk is full")).startswith(
        "no space left")
    denied = storage_error(PermissionError(errno.EACCES, "Permission denied", "/s/catalog.sqlite"))
    assert denied.startswith("permission denied (/s/catalog.sqlite)")
    assert storage_error(sqlite3.OperationalError("attempt to write a readonly database")
                         ).startswith("permission denied")  # fmt: skip
    assert all("\n" not in m for m in (full, denied))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_store_is_one_line(repo, tmp_path):
    store_dir = tmp_path / "s"
    assert _cli(["index", str(repo), "--store", str(store_dir), "-j", "1"]).returncode == 0
    (repo / "pkg0" / "new.py").write_bytes(b"n = 1\n")
    modes = {p: p.stat().st_mode for p in [store_dir, *store_dir.rglob("*")]}
    try:
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        res = _cli(["index", str(repo), "--store", str(store_dir), "-j", "1"])
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert "permission denied" in res.stderr or "readonly" in res.stderr
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
        (repo / "pkg0" / "new.py").unlink()
    with cstvault.open(store_dir) as store:
        assert verify_store(store).mismatched == 0
