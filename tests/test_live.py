"""Per-file writes: update / remove / apply_edit, the journal, versions, crash recovery."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cstvault
from cstvault import indexer
from cstvault.bench import live_crash
from cstvault.live import FileError, FileVanished, common_edit
from cstvault.store import StoreLocked
from cstvault.store import journal as jn
from cstvault.verify import compare_trees, verify_store

A = b"def f(x):\n    return x + 1\n\n\nclass C:\n    pass\n"


def _ts_tree(text: bytes, language: str = "python"):
    return cstvault.languages.parser(language).parse(text)


def _same_as_tree_sitter(tree, text: bytes, language: str = "python") -> None:
    root = tree.root_node
    assert bytes(root.text) == text[root.start_byte : root.end_byte]
    assert compare_trees("f", _ts_tree(text, language), tree) == []


@pytest.fixture()
def root(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    (r / "a.py").write_bytes(A)
    (r / "b.js").write_bytes(b"function g(a) { return a * 2; }\n")
    indexer.index(r, compact=False)
    return r


def test_update_remove_edit_and_every_version_reads_back(root):
    with cstvault.open(root, write=True) as s:
        assert [v.version for v in s.versions("a.py")] == [1]
        texts = {1: A}
        texts[2] = A.replace(b"x + 1", b"x + 2")
        assert s.update("a.py", texts[2]) == 2
        (root / "a.py").write_bytes(texts[2] + b"y = 3\n")
        texts[3] = texts[2] + b"y = 3\n"
        assert s.update(root / "a.py") == 3  # an absolute path inside the root
        at = texts[3].index(b"pass")
        texts[4] = texts[3][:at] + b"return 1" + texts[3][at + 4 :]
        assert s.apply_edit("a.py", at, at + 4, at + 8, "return 1") == 4
        assert s.update("a.py", texts[4]) == 4  # unchanged text: no new version
        listed = s.versions("a.py")
        assert [v.version for v in listed] == [4, 3, 2, 1]
        assert listed[0].current and listed[0].edit == (at, at + 4, at + 8)
        for v, text in texts.items():
            assert s.source("a.py", version=v) == text
            _same_as_tree_sitter(s.tree("a.py", version=v), text)
        assert s.remove("b.js") == 1
        with pytest.raises(KeyError):
            s.source("b.js")
        assert s.source("b.js", version=1).startswith(b"function g")
        assert "b.js" not in {f.path for f in s.files()}
    with cstvault.open(root) as r:  # a new reader sees all of it
        assert r.source("a.py") == texts[4]
        assert r.source("a.py", version=2) == texts[2]
        assert verify_store(r).mismatched == 0


def test_edits_parse_incrementally_to_the_tree_tree_sitter_gives(root):
    rng = random.Random(5)
    with cstvault.open(root, write=True, durability="batch", batch_entries=7) as s:
        text = A
        for _ in range(60):
            start = rng.randrange(len(text) + 1)
            end = min(len(text), start + rng.choice([0, 0, 1, 3]))
            new = rng.choice([b"", b"a", b"(", b"\n", b" + y", b"\n    z = 1\n", b'"'])
            s.apply_edit("a.py", start, end, start + len(new), new)
            text = text[:start] + new + text[end:]
        s.sync()
        _same_as_tree_sitter(s.tree("a.py"), text)
        assert s.source("a.py") == text
        kept = [v.version for v in s.versions("a.py")]
        assert len(kept) == 16  # the default retention
        for v in kept[:5]:
            _same_as_tree_sitter(s.tree("a.py", version=v), s.source("a.py", version=v))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 4),
                                st.sampled_from([b"", b"x", b"):", b"\n", b"#", b"'''"])),
                      min_size=1, max_size=12))  # fmt: skip
def test_random_edit_streams_store_exactly_what_tree_sitter_parses(tmp_path, edits):
    r = Path(tempfile.mkdtemp(dir=tmp_path))
    (r / "a.py").write_bytes(A)
    indexer.index(r, compact=False)
    text = A
    with cstvault.open(r, write=True) as s:
        for start, length, new in edits:
            start = min(start, len(text))
            end = min(len(text), start + length)
            s.apply_edit("a.py", start, end, start + len(new), new)
            text = text[:start] + new + text[end:]
        _same_as_tree_sitter(s.tree("a.py"), text)
        first = s.versions("a.py")[-1].version
        assert s.source("a.py", version=first) == A


def test_batched_edits_are_seen_by_readers_only_once_committed(root):
    s = cstvault.open(root, write=True, durability="batch", batch_entries=1000, batch_ms=1e9)
    try:
        s.apply_edit("a.py", 0, 0, 2, "# ")
        with cstvault.open(root) as r:
            assert r.source("a.py") == A
        s.sync()
        with cstvault.open(root) as r:
            assert r.source("a.py") == b"# " + A
    finally:
        s.close()


def test_another_process_sees_each_update_and_never_a_stale_cached_tree(root):
    code = (
        "import sys, cstvault\n"
        "s = cstvault.open(sys.argv[1])\n"
        "for line in sys.stdin:\n"
        "    t = s.tree('a.py')\n"
        "    print(bytes(t.root_node.text).count(b'z'), flush=True)\n"
    )
    reader = subprocess.Popen([sys.executable, "-c", code, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        with cstvault.open(root, write=True) as s:
            for k in range(4):
                reader.stdin.write("go\n")
                reader.stdin.flush()
                assert int(reader.stdout.readline()) == k
                s.apply_edit("a.py", 0, 0, 2, "z\n")
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)


def test_one_writer_at_a_time_and_readers_are_not_blocked(root):
    with cstvault.open(root, write=True) as s:
        s.update("a.py", A + b"\n")
        with pytest.raises(StoreLocked):
            cstvault.open(root, write=True)
        with cstvault.open(root) as r:
            assert r.source("a.py") == A + b"\n"
    with cstvault.open(root) as r, pytest.raises(StoreLocked, match="opened for reading"):
        r.update("a.py", A)


def test_bad_input_is_a_clear_error_and_changes_nothing(root, tmp_path):
    with cstvault.open(root, write=True) as s:
        with pytest.raises(FileError, match="outside the store's root"):
            s.update(tmp_path / "elsewhere.py", b"x = 1\n")
        with pytest.raises(FileError, match="outside"):
            s.update("../x.py", b"x = 1\n")
        with pytest.raises(FileError, match="unsupported language"):
            s.update("notes.txt", b"hello\n")
        with pytest.raises(FileError, match="binary"):
            s.update("a.py", b"x = 1\0\n")
        with pytest.raises(FileError, match="outside the file"):
            s.apply_edit("a.py", 10, len(A) + 5, 11, "x")
        with pytest.raises(FileError, match="new_end_byte"):
            s.apply_edit("a.py", 0, 0, 5, "x")
        with pytest.raises(FileVanished):
            s.update("gone.py")
        with pytest.raises(KeyError):
            s.apply_edit("missing.py", 0, 0, 1, "x")
        assert s.source("a.py") == A
        assert [v.version for v in s.versions("a.py")] == [1]


def _journal(root: Path) -> Path:
    return next((root / ".cstvault" / "segments").glob(f"{jn.JOURNAL_BASE:08d}*.seg"))


def test_a_torn_tail_is_dropped_and_reported(root):
    with cstvault.open(root, write=True) as s:
        s.update("a.py", A + b"z = 1\n")
    path = _journal(root)
    with open(path, "ab") as f:
        f.write(jn.MAGIC + b"\x01\0\0\0" + b"\xff" * 9)  # a header cut short
    with cstvault.open(root, write=True) as s:
        rec = s.recovery
        assert rec["damage"].startswith("torn") and rec["dropped_bytes"] == 17
        assert Path(rec["rejected_file"]).read_bytes().startswith(jn.MAGIC)
        assert s.source("a.py") == A + b"z = 1\n"
    assert not cstvault.open(root).recovery  # nothing left to replay


def test_a_damaged_entry_in_the_middle_stops_replay_there(root, monkeypatch):
    from cstvault import live

    s = cstvault.open(root, write=True)
    w = s.live_writer()
    monkeypatch.setattr(live.LiveWriter, "apply", lambda self, entries, **_: None)  # a crash
    for k in range(3):
        s.update("a.py", A + b"# %d\n" % k)
    w.unsynced = []
    w.journal.close()
    s._live = None
    s.close()
    monkeypatch.undo()
    entries = jn.scan(_journal(root)).entries
    assert len(entries) == 3
    with open(_journal(root), "r+b") as f:  # flip a byte inside the second entry
        f.seek(entries[1].offset + jn.HEAD + 3)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with cstvault.open(root, write=True) as s:
        rec = s.recovery
        assert rec["replayed"] == 1 and rec["damage"] == "CRC32C mismatch"
        assert rec["entries_after_damage"] >= 1
        assert s.source("a.py") == A + b"# 0\n"  # nothing past the damage applied
        assert verify_store(s).mismatched == 0


def test_checkpoint_folds_the_journal_into_frozen_segments(root):
    with cstvault.open(root, write=True) as s:
        for k in range(5):
            s.update("a.py", A + b"# %d\n" % k)
        first = _journal(root)
        out = s.checkpoint()
        assert out["blobs_frozen"] >= 1
        assert not first.exists()  # nothing points into it any more
        assert s.catalog.levels() == {"19": s.catalog.counts()["blobs"]}
        assert s.source("a.py", version=3) == A + b"# 1\n"
        s.update("a.py", A)
    with cstvault.open(root) as r:
        assert r.source("a.py") == A
        assert verify_store(r).mismatched == 0


def test_index_after_live_writes_keeps_their_history(root):
    with cstvault.open(root, write=True) as s:
        s.update("a.py", A + b"# live\n")
    (root / "a.py").write_bytes(A + b"# from disk\n")
    indexer.index(root, compact=False)
    with cstvault.open(root) as r:
        assert r.source("a.py") == A + b"# from disk\n"
        kept = {v.version: v.kind for v in r.versions("a.py")}
        assert kept[2] == "full"
        assert r.source("a.py", version=2) == A + b"# live\n"
        assert r.source("a.py", version=1) == A
        r.gc()
        assert r.source("a.py", version=2) == A + b"# live\n"  # gc keeps its blob


def test_common_edit():
    assert common_edit(b"abcdef", b"abXYef") == (2, 4, 4)
    assert common_edit(b"aaa", b"aaaa") == (3, 3, 4)
    assert common_edit(b"", b"x") == (0, 0, 1)


def test_crash_trials_lose_no_acknowledged_write(tmp_path):
    root = tmp_path / "crash"
    live_crash.make_root(root)
    results = []
    for seed in range(16):
        mode = "batch" if seed % 4 == 3 else "commit"
        results.append(live_crash.trial(root, seed, kill_after=0.2 + 0.05 * seed,
                                        durability=mode))
    for fault in ("live.journal_written:3", "live.journaled:2", "live.committed:2",
                  "live.rotated:1"):  # fmt: skip
        results.append(live_crash.trial(root, 100, fault=fault))
    for seed, replay in ((200, "fault"), (201, 0.1)):  # a replaying process killed too
        results.append(live_crash.trial(root, seed, kill_after=0.5, replay_kill=replay))
    assert len(results) >= 20
    assert sum(r["acknowledged"] for r in results) > 0
    bad = [r for r in results if r["lost"] or r["failed_open"] or r["failed_verify"]]
    assert bad == []
    assert any(r["recovery"] and r["recovery"]["replayed"] for r in results)  # replay ran


def test_watch_writes_saves_creations_deletions_and_renames(root):
    import threading

    from cstvault.watch import watch

    stop = threading.Event()
    ready = threading.Event()
    batches = []
    t = threading.Thread(target=watch, args=(root,), daemon=True,
                         kwargs={"stop_event": stop, "ready": ready.set,
                                 "on_batch": batches.append, "debounce_ms": 20})  # fmt: skip
    t.start()
    assert ready.wait(30)
    import time

    time.sleep(0.3)  # the watcher is set up

    def until(check, what: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with cstvault.open(root) as r:
                if check(r):
                    return
            time.sleep(0.05)
        raise AssertionError(f"watch never wrote {what}")

    (root / "a.py").write_bytes(A + b"saved = 1\n")
    until(lambda r: r.source("a.py").endswith(b"saved = 1\n"), "a save")
    (root / "new.py").write_bytes(b"x = 1\n")
    until(lambda r: "new.py" in {f.path for f in r.files()}, "a new file")
    (root / "new.py").rename(root / "moved.py")
    until(lambda r: {f.path for f in r.files()} >= {"moved.py"}
          and "new.py" not in {f.path for f in r.files()}, "a rename")  # fmt: skip
    (root / "b.js").unlink()
    until(lambda r: "b.js" not in {f.path for f in r.files()}, "a deletion")
    (root / "notes.txt").write_text("not code")
    (root / ".gitignore").write_text("ignored.py\n")
    (root / "ignored.py").write_text("y = 2\n")
    (root / "a.py").write_bytes(A)
    until(lambda r: r.source("a.py") == A, "the last save")
    stop.set()
    t.join(30)
    with cstvault.open(root) as r:
        paths = {f.path for f in r.files()}
        assert "ignored.py" not in paths and "notes.txt" not in paths
        assert verify_store(r).mismatched == 0
    assert sum(b.updated for b in batches) >= 4 and sum(b.removed for b in batches) >= 2


def _edit_points(text: bytes, start: int, end: int, after: bytes, new_end: int):
    def pt(t: bytes, o: int) -> tuple[int, int]:
        return t.count(b"\n", 0, o), o - (t.rfind(b"\n", 0, o) + 1)

    return pt(text, start), pt(text, end), pt(after, new_end)


def test_changed_ranges_are_tree_sitters_for_every_typed_edit(root):
    parser = cstvault.languages.parser("python")
    rng = random.Random(7)
    text = A * 3
    with cstvault.open(root, write=True) as s:
        s.update("a.py", text)
        for _ in range(40):
            start = rng.randrange(len(text) + 1)
            end = min(len(text), start + rng.choice([0, 0, 1]))
            new = rng.choice([b"x", b"", b"(", b"\n", b":"])
            after = text[:start] + new + text[end:]
            v = s.apply_edit("a.py", start, end, start + len(new), new)
            old_tree = parser.parse(text)
            old_tree.edit(start, end, start + len(new),
                          *_edit_points(text, start, end, after, start + len(new)))  # fmt: skip
            theirs = old_tree.changed_ranges(parser.parse(after, old_tree))
            assert s.changed_ranges("a.py", v - 1, v) == list(theirs)
            text = after
        # across versions made by updates (no recorded edit): the diff's line hunks
        v = s.update("a.py", A)
        after = A + b"tail = 1\n"
        s.update("a.py", after)
        old_tree = parser.parse(A)
        old_tree.edit(len(A), len(A), len(after),
                      *_edit_points(A, len(A), len(A), after, len(after)))  # fmt: skip
        theirs = old_tree.changed_ranges(parser.parse(after, old_tree))
        assert s.changed_ranges("a.py", v, v + 1) == list(theirs) != []


def test_stable_ids_survive_edits_around_and_moves(root):
    funcs = [f"def f{k}(a, b):\n    return a * {k} + b\n\n\n".encode() for k in range(6)]
    with cstvault.open(root, write=True) as s:
        s.update("a.py", b"".join(funcs))
        t1 = s.tree("a.py")
        ids1 = {str(n.text): n.stable_id for n in t1.root_node.children}
        assert sorted(ids1.values()) == sorted(set(ids1.values()))
        # an edit inside f2, and f4 moved before f0
        changed = funcs[:]
        changed[2] = changed[2].replace(b"a * 2", b"a * 20")
        moved = [changed[4]] + changed[:4] + changed[5:]
        s.update("a.py", b"".join(moved))
        t2 = s.tree("a.py")
        ids2 = {str(n.text): n.stable_id for n in t2.root_node.children}
        for k in (0, 1, 3, 4, 5):  # unchanged functions keep their ids, the moved one too
            key = str(funcs[k].rstrip(b"\n"))
            assert ids2[key] == ids1[key]
        f2_old = next(v for k, v in ids1.items() if "a * 2 " in k)
        f2_new = next(v for k, v in ids2.items() if "a * 20" in k)
        assert f2_new == f2_old  # edited inside: matched bottom-up by its children
        assert t2.root_node.stable_id == t1.root_node.stable_id == 0
        all1 = set(s.stable_ids("a.py", version=2).tolist())
        all2 = s.stable_ids("a.py").tolist()
        assert len(set(all2)) == len(all2)  # unique within a version
        fresh = [i for i in all2 if i not in all1]
        assert fresh and min(fresh) > max(all1)  # new nodes get ids never used before


def test_a_second_writer_waits_with_timeout_then_gets_a_clear_error(root):
    code = (
        "import sys, time, cstvault\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    cstvault.open(sys.argv[1], write=True, timeout=0.3)\n"
        "except cstvault.StoreLocked as exc:\n"
        "    print(round(time.monotonic() - t0, 2), exc)\n"
    )
    with cstvault.open(root, write=True):
        out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                             text=True, timeout=60).stdout  # fmt: skip
    waited, _, message = out.partition(" ")
    assert float(waited) >= 0.3
    assert "waited 0.3 s" in message and f"pid {os.getpid()}" in message


def test_live_trees_count_in_the_memory_budget(root):
    cfg = cstvault.CacheConfig(max_memory_mb=8)
    with cstvault.open(root, cfg, write=True) as s:
        s.apply_edit("a.py", 0, 0, 2, "# ")
        w = s.live_writer()
        total = s.config.max_memory_mb * 2**20 + w.live_bytes
        assert abs(total - 8 * 2**20) < 2  # the RAM tiers and the live tier share 8 MB
        assert w.live_summary()["bytes"] <= w.live_bytes


def test_ctrl_c_stops_watch_with_a_consistent_store(root):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "cstvault.cli", "watch", str(root),
                             "--debounce-ms", "20"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        time.sleep(2.0)
        for k in range(5):
            (root / f"w{k}.py").write_text(f"v = {k}\n")
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "the store is committed" in err
    with cstvault.open(root) as r:
        assert {f"w{k}.py" for k in range(5)} <= {f.path for f in r.files()}
        assert verify_store(r).mismatched == 0
        assert r.stats()["journal_bytes"] > 0


def test_the_journal_is_folded_past_its_size_and_by_gc(root, monkeypatch):
    from cstvault import live

    monkeypatch.setattr(live, "CHECKPOINT_BYTES", 4096)
    with cstvault.open(root, write=True) as s:
        for k in range(40):
            s.update("a.py", A + b"# %d\n" % k)
        w = s.live_writer()
        assert w.stats["checkpoints"] >= 1 and w.journal.seg_id > jn.JOURNAL_BASE
    monkeypatch.undo()
    with cstvault.open(root, write=True) as s:
        s.update("a.py", A + b"# gc\n")
        before = s.live_writer().journal.seg_id
    with cstvault.open(root) as r:
        r.gc()
        assert jn.journal_position(r.catalog.meta())[0] == before + 1
        assert r.catalog.levels() == {"19": r.catalog.counts()["blobs"]}
        assert r.source("a.py") == A + b"# gc\n"
        assert verify_store(r).mismatched == 0


def test_retention_by_count_and_by_bytes(root):
    with cstvault.open(root, write=True, keep_versions=5) as s:
        for k in range(12):
            s.update("a.py", A + b"x = %d\n" % k * (k + 1))
        assert len(s.versions("a.py")) == 5
    with cstvault.open(root, write=True, keep_versions=100, keep_version_bytes=400) as s:
        for k in range(12):
            s.update("a.py", A + b"y = %d\n" % k * (40 + k))
        kept = s.versions("a.py")
        assert sum(v.delta_bytes for v in kept) <= 400 and len(kept) >= 2
        assert s.catalog.meta()["keep_version_bytes"] == "400"  # kept in the store
        oldest = kept[-1].version
        assert s.source("a.py", version=oldest)  # the oldest kept still rebuilds
        with pytest.raises(KeyError, match="not kept"):
            s.source("a.py", version=oldest - 1)


def test_history_and_show_at_a_version_on_the_command_line(root):
    from click.testing import CliRunner

    from cstvault.cli import main

    with cstvault.open(root, write=True) as s:
        s.update("a.py", b"def g():\n    return 2\n")
    run = CliRunner().invoke
    out = run(main, ["history", "a.py", "--store", str(root), "--json"])
    assert out.exit_code == 0, out.output
    assert [r["version"] for r in __import__("json").loads(out.output)] == [2, 1]
    old = run(main, ["show", "a.py@1", "--store", str(root)])
    assert old.exit_code == 0 and "class_definition" in old.output
    new = run(main, ["show", "a.py@2:2:5", "--store", str(root)])
    assert new.exit_code == 0 and "return_statement" in new.output
    bad = run(main, ["show", "a.py@9", "--store", str(root)])
    assert bad.exit_code != 0 and "not kept" in bad.output


def test_watch_takes_a_branch_switch_as_one_batch(root):
    import threading
    import time

    from cstvault.watch import watch

    stop, ready, batches = threading.Event(), threading.Event(), []
    t = threading.Thread(target=watch, args=(root,), daemon=True,
                         kwargs={"stop_event": stop, "ready": ready.set,
                                 "on_batch": batches.append, "debounce_ms": 200})  # fmt: skip
    t.start()
    assert ready.wait(30)
    time.sleep(0.3)
    for k in range(150):  # a checkout rewriting many files at once
        (root / f"pkg{k % 5}").mkdir(exist_ok=True)
        (root / f"pkg{k % 5}" / f"m{k}.py").write_text(f"def f{k}():\n    return {k}\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(b.updated for b in batches) < 150:
        time.sleep(0.1)
    stop.set()
    t.join(30)
    assert sum(b.updated for b in batches) == 150
    assert len(batches) <= 5  # debounced into a few group commits, not 150


def test_a_replay_killed_while_storing_a_torn_group_loses_nothing(root):
    """Batched edits journaled, never committed (a crash); the process replaying them is
    killed while it stores their file again; the next opener finishes the job and every
    version reads back."""
    from cstvault import faults

    s = cstvault.open(root, write=True, durability="batch", batch_entries=100,
                      batch_ms=60_000)  # fmt: skip
    s.update("a.py", A + b"# 1\n")
    s.sync()
    texts = {2: A + b"# 1\n"}
    for v in (3, 4):
        at = len(texts[v - 1])
        texts[v] = texts[v - 1] + b"# %d\n" % v
        assert s.apply_edit("a.py", at, at, len(texts[v]), texts[v][at:]) == v
    w = s.live_writer()
    w.journal.close()  # a crash: the edits are in the journal, their group never committed
    w.dirty.clear()
    w.unsynced = []
    s._live = None
    s.close()
    env = dict(os.environ, **{faults.ENV: "live.replay_stored:1"})
    code = "import sys, cstvault; cstvault.open(sys.argv[1], write=True).close()"
    proc = subprocess.run([sys.executable, "-c", code, str(root)], env=env)
    assert proc.returncode == -9
    with cstvault.open(root) as r:
        assert r.source("a.py") == texts[4]
        for v, text in texts.items():
            assert r.source("a.py", version=v) == text
        assert [v.version for v in r.versions("a.py") if v.current] == [4]
        assert verify_store(r).mismatched == 0
