"""Sharded stores: built by shard tasks (a process pool, a real Dask LocalCluster), read as
one store, identical to the single store of the same files; resumes, faults, bad input."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

import cstvault
from cstvault import faults, indexer
from cstvault.cli import main
from cstvault.shards import ManifestError, ShardedStore, build
from cstvault.shards import manifest as mf
from cstvault.store import IncompleteStore, ShardedStoreError

SHARD_MB = 2048 / 2**20  # 2 KiB of source a shard: the repo below makes several


def _write_repo(root):
    for k in range(30):
        d = root / f"pkg{k % 4}" / ("sub" if k % 3 else "")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"m{k}.py").write_text(
            f"import os\n\n\ndef helper_{k}(x):\n    return shared_name(x) + {k}\n\n\n"
            f"class C{k}:\n    def run(self):\n        return helper_{k}(self)\n" * (1 + k % 3))
        if k % 5 == 0:
            (d / f"w{k}.js").write_text(f"function shared_name(a) {{ return a * {k}; }}\n")
        if k % 7 == 0:
            (d / f"g{k}.go").write_text(f"package p\n\nfunc Run{k}() int {{ return {k} }}\n")
    (root / "broken.py").write_text("def f(:\n    return\n")


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "repo"
    _write_repo(root)
    return root


def _single(root, tmp_path):
    store = tmp_path / "single"
    if store.exists():
        shutil.rmtree(store)
    indexer.index(root, store, compact=False)
    return store


def _same(sharded_dir, single_dir) -> list[str]:
    """Differences between the sharded store and the single one, file by file."""
    diffs = []
    with cstvault.open(sharded_dir) as sh, cstvault.open(single_dir) as one:
        assert isinstance(sh, ShardedStore)
        paths = [f.path for f in one.files()]
        if [f.path for f in sh.files()] != paths:
            diffs.append("listing")
        for p in paths:
            if sh.source(p) != one.source(p):
                diffs.append(f"source {p}")
            if str(sh.tree(p).root_node) != str(one.tree(p).root_node):
                diffs.append(f"tree {p}")
            if sh.node_at(p, 3, 6).type != one.node_at(p, 3, 6).type:
                diffs.append(f"node_at {p}")
        for name in ("shared_name", "helper_3", "os", "Run7", "nothing_has_this"):
            if sh.files_with_symbol(name) != one.files_with_symbol(name):
                diffs.append(f"symbol {name}")
            if sorted(map(repr, sh.definitions(name))) != sorted(map(repr, one.definitions(name))):
                diffs.append(f"definitions {name}")
        q = "(function_definition name: (identifier) @n)"
        got = [(m.path, m.captures["n"][0].start_byte) for m in sh.query(q, "python")]
        want = [(m.path, m.captures["n"][0].start_byte) for m in one.query(q, "python")]
        if got != want:
            diffs.append("query")
        a, b = sh.stats(), one.stats()
        if any(a[k] != b[k] for k in ("files", "blobs", "lines", "nodes")):
            diffs.append("stats")
    return diffs


def test_a_sharded_store_answers_as_the_single_store_does(repo, tmp_path):
    out = build.index_sharded(repo, tmp_path / "sh", runner=build.local_runner(2),
                              shard_mb=SHARD_MB)  # fmt: skip
    m = mf.read(tmp_path / "sh")
    assert out["shards"] == len(m.shards) >= 4
    assert [s.first for s in m.shards] == sorted(s.first for s in m.shards)
    assert sum(s.files for s in m.shards) == out["files"] == 30 + 6 + 5 + 1
    assert all(s.files for s in m.shards)
    assert _same(tmp_path / "sh", _single(repo, tmp_path)) == []
    with cstvault.open(tmp_path / "sh") as sh:  # each path read from the shard of its range
        for f in list(sh.files()):
            k = sh.manifest.shard_of(f.path)
            assert sh.manifest.shards[k].first <= f.path
            assert k + 1 == len(sh.manifest.shards) or f.path < sh.manifest.shards[k + 1].first


def test_rerunning_resumes_and_changed_files_go_to_their_shard(repo, tmp_path):
    sh = tmp_path / "sh"
    build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB)
    before = mf.read(sh)
    again = build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB)
    assert again["indexed"] == 0 and again["unchanged"] == again["files"]
    assert again["shards_rebuilt"] == 0  # no shard's files changed: no task ran
    (repo / "pkg1" / "sub" / "m1.py").write_text("def changed():\n    return 1\n")
    (repo / "pkg0" / "m0.py").unlink()
    (repo / "pkg2" / "new.py").write_text("def brand_new():\n    pass\n")
    out = build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB)
    after = mf.read(sh)
    assert [s.first for s in after.shards] == [s.first for s in before.shards]  # ranges kept
    assert out["indexed"] == 2 and out["files"] == 30 + 6 + 5 + 1
    assert _same(sh, _single(repo, tmp_path)) == []
    with cstvault.open(sh) as s:
        assert s.files_with_symbol("brand_new") == ["pkg2/new.py"]
        with pytest.raises(KeyError):
            s.source("pkg0/m0.py")


def test_the_cli_indexes_a_sharded_store_on_a_dask_local_cluster(repo, tmp_path):
    sh = tmp_path / "sh"
    res = CliRunner().invoke(main, ["index", str(repo), "--store", str(sh), "--dask",
                                    "local:2", "--shard-mb", str(SHARD_MB), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["shards"] >= 4 and out["files"] == 42 and out["worker_peak_rss_mb"] > 0
    assert _same(sh, _single(repo, tmp_path)) == []
    # the read commands take it as one store; verify runs a task per shard on Dask
    res = CliRunner().invoke(main, ["stats", "--store", str(sh), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["files"] == 42
    res = CliRunner().invoke(main, ["verify", "--store", str(sh), "--dask", "local:2", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output[res.output.index("{"):])
    assert got["files"] == got["ok"] == 42 and got["mismatched"] == 0
    single = _single(repo, tmp_path)
    for args in (["query", "(function_definition name: (identifier) @n)", "--lang", "python",
                  "--json"], ["defs", "shared_name", "--json"], ["refs", "helper_3", "--json"],
                 ["outline", "pkg1/sub/m1.py", "--json"], ["show", "pkg2/sub/m2.py:4:5"],
                 ["highlight", "pkg3/m3.py"], ["history", "pkg1/sub/m1.py", "--json"]):
        a = CliRunner().invoke(main, [*args, "--store", str(sh)])
        b = CliRunner().invoke(main, [*args, "--store", str(single)])
        assert a.exit_code == b.exit_code == 0, a.output + b.output
        if args[0] == "query":
            a, b = json.loads(a.output), json.loads(b.output)
            assert a["matches"] == b["matches"] > 30 and a["matches_found"] == b["matches_found"]
        else:
            assert a.output == b.output and a.output.strip() not in ("", "[]")


def test_a_worker_killed_mid_task_has_its_shard_rebuilt(repo, tmp_path, monkeypatch):
    """A Dask worker dies (SIGKILL) after indexing a shard, before freezing it: the
    scheduler reruns the task, which resumes the shard; the store is the same."""
    from cstvault.shards.on_dask import dask_runner

    monkeypatch.setenv(faults.ENV, "shards.indexed:1")
    monkeypatch.setenv(faults.ONCE_ENV, str(tmp_path / "fired"))
    with dask_runner("local:2") as run:
        out = build.index_sharded(repo, tmp_path / "sh", runner=run, shard_mb=SHARD_MB)
    assert (tmp_path / "fired").exists()  # a worker was killed
    assert out["files"] == 42
    assert _same(tmp_path / "sh", _single(repo, tmp_path)) == []


def test_a_failing_shard_commits_nothing_and_is_named(repo, tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, "shards.indexed:1:enospc")
    with pytest.raises(build.ShardFailed, match=r"shard shard-\d{3} failed.*No space left"):
        build.index_sharded(repo, tmp_path / "sh", runner=build.local_runner(2),
                            shard_mb=SHARD_MB)  # fmt: skip
    assert not (tmp_path / "sh" / mf.MANIFEST).exists()
    with pytest.raises(IncompleteStore, match="re-run `cstvault index`"):
        cstvault.open(tmp_path / "sh")
    monkeypatch.delenv(faults.ENV)
    build.index_sharded(repo, tmp_path / "sh", runner=build.local_runner(2), shard_mb=SHARD_MB)
    assert _same(tmp_path / "sh", _single(repo, tmp_path)) == []


def test_bad_input_is_a_clear_error(repo, tmp_path, monkeypatch):
    from cstvault.shards import on_dask

    monkeypatch.setattr(on_dask, "CONNECT_TIMEOUT_S", 1)
    sh = tmp_path / "sh"
    res = CliRunner().invoke(main, ["index", str(repo), "--store", str(sh), "--dask",
                                    "tcp://127.0.0.1:1"])  # fmt: skip
    assert res.exit_code != 0
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in res.output
    assert not (sh / mf.MANIFEST).exists()
    res = CliRunner().invoke(main, ["index", str(repo), "--store", str(tmp_path / "one"),
                                    "--scratch", str(tmp_path)])  # fmt: skip
    assert res.exit_code == 2 and "--scratch is for sharded stores" in res.output

    build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB)
    text = (sh / mf.MANIFEST).read_text()
    data = json.loads(text)
    data.pop("check")
    data["format"] = 99  # a manifest from another version, its check made to match
    body = json.dumps(data, sort_keys=True, separators=(",", ":"))
    (sh / mf.MANIFEST).write_text(json.dumps({**data, "check": faults_crc(body)}))
    with pytest.raises(ManifestError, match="manifest format 99"):
        cstvault.open(sh)
    (sh / mf.MANIFEST).write_text(text[:-20])
    with pytest.raises(ManifestError, match="not a readable manifest"):
        cstvault.open(sh)
    (sh / mf.MANIFEST).write_text(text)
    with cstvault.open(sh) as s:
        assert len(list(s.files())) == 42
    shutil.rmtree(sh / "shard-001")
    with pytest.raises(ManifestError, match="shard shard-001 is missing"):
        cstvault.open(sh)
    with pytest.raises(ShardedStoreError, match="per-file writes are not supported"):
        cstvault.open(sh, write=True)
    for cmd in ("gc", "freeze", "checkpoint"):  # a single store's commands: a clear error
        res = CliRunner().invoke(main, [cmd, "--store", str(sh)])
        assert res.exit_code == 1 and "is a sharded store" in res.output, res.output
    res = CliRunner().invoke(main, ["index", str(repo), "--store", str(sh), "--shard-mb", "1"])
    assert res.exit_code == 0, res.output  # the missing shard is rebuilt
    assert _same(sh, _single(repo, tmp_path)) == []


def test_verify_of_a_sharded_store_names_a_damaged_shard(repo, tmp_path):
    sh = tmp_path / "sh"
    build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB)
    res = CliRunner().invoke(main, ["verify", "--store", str(sh), "--jobs", "2", "--json"])
    assert res.exit_code == 0, res.output
    seg = sorted((sh / "shard-001" / "segments").glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    res = CliRunner().invoke(main, ["verify", "--store", str(sh), "--json"])
    assert res.exit_code != 0
    assert json.loads(res.output)["shards_with_mismatches"] == ["shard-001"]


def test_a_shard_that_is_not_what_the_manifest_records_is_named(repo, tmp_path):
    sh = tmp_path / "sh"
    build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB)
    m = mf.read(sh)
    other = m.shards[2]
    with cstvault.open(sh / other.name, write=True) as s:  # changed behind the manifest's back
        path = next(iter(s.files())).path
        s.update(path, b"def replaced():\n    pass\n")
    with cstvault.open(sh) as s, pytest.raises(ManifestError, match=f"shard {other.name}"):
        s.source(path)


def faults_crc(text: str) -> int:
    from cstvault.checksum import crc32c

    return crc32c(text.encode())


def test_nothing_on_the_single_machine_path_imports_dask(repo, tmp_path):
    code = ("import sys, cstvault; from cstvault import indexer; from cstvault.shards import build;"
            f"indexer.index({str(repo)!r}, {str(tmp_path / 's')!r}, compact=False);"
            f"s = cstvault.open({str(tmp_path / 's')!r}); s.tree('broken.py');"
            "print(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ}, check=True)  # fmt: skip
    assert out.stdout.strip() == "False"


def test_a_query_runs_per_shard_on_a_dask_client_in_path_order(repo, tmp_path):
    from distributed import Client, LocalCluster

    sh = tmp_path / "sh"
    build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB)
    q = "(function_definition name: (identifier) @n)"
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")  # fmt: skip
    with cluster, Client(cluster) as client, cstvault.open(sh) as s:
        local = list(s.query(q, "python"))
        remote = list(s.query(q, "python", client=client))
        go = list(s.query("(function_declaration) @f", "go", client=client))
        go_files = {f.path for f in s.files() if f.path.endswith(".go")}
    assert len(local) > 30 and remote == local
    assert [m.path for m in remote] == sorted(m.path for m in remote)
    assert {m.path for m in go} == go_files


def test_shards_built_in_a_scratch_directory_are_moved_in(repo, tmp_path):
    """With a scratch directory the tasks write there (a changed shard from a copy of the
    old one) and the driver moves the finished shards in; a shard whose files did not
    change is kept without a task, the replaced ones are deleted after the manifest."""
    sh, scratch = tmp_path / "sh", tmp_path / "scratch"
    scratch.mkdir()
    out = build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB,
                              scratch=str(scratch))  # fmt: skip
    first = mf.read(sh)
    assert out["shards_rebuilt"] == len(first.shards) and list(scratch.iterdir()) == []
    assert sorted(p.name for p in sh.iterdir() if p.is_dir()) == [s.name for s in first.shards]
    assert _same(sh, _single(repo, tmp_path)) == []
    (repo / "pkg3" / "sub" / "m7.py").write_text("def seventh():\n    return 7\n")
    out = build.index_sharded(repo, sh, runner=build.local_runner(2), shard_mb=SHARD_MB,
                              scratch=str(scratch))  # fmt: skip
    second = mf.read(sh)
    changed = [a.name for a, b in zip(first.shards, second.shards, strict=True)
               if a.name != b.name]  # fmt: skip
    k = second.shard_of("pkg3/sub/m7.py")
    assert first.shards[k].name in changed and out["indexed"] == 1
    assert out["shards_rebuilt"] == len(changed) == 1  # that shard alone
    assert sorted(p.name for p in sh.iterdir() if p.is_dir()) == [s.name for s in second.shards]
    assert _same(sh, _single(repo, tmp_path)) == [] and list(scratch.iterdir()) == []


def test_each_task_on_a_local_cluster_runs_in_a_fresh_worker_process():
    """`--dask local:N`: one task per worker at a time, the worker restarted after each,
    so no task starts from what an earlier one left in its process."""
    from cstvault.shards.on_dask import dask_runner

    with dask_runner("local:2") as run:
        pids = list(run(lambda _: os.getpid(), [None] * 6, [f"t{k}" for k in range(6)]))
    assert len(pids) == 6 and len(set(pids)) == 6 and os.getpid() not in pids


def test_a_readers_open_shards_are_charged_to_its_budget(repo, tmp_path):
    """Each shard a reader opens is charged to the one budget: its page cache and what an
    open shard holds."""
    from cstvault.cache import CacheConfig
    from cstvault.shards import SHARD_OPEN_BYTES

    build.index_sharded(repo, tmp_path / "sh", runner=build.local_runner(1),
                        shard_mb=SHARD_MB)  # fmt: skip
    with ShardedStore.open(tmp_path / "sh", CacheConfig(max_memory_mb=64)) as sh:
        n = len(sh.manifest.shards)
        assert n >= 4 and sh.cache.held() == 0
        sh.shard(0)
        one = sh.cache.held()
        assert one >= SHARD_OPEN_BYTES
        sh.files_with_symbol("shared_name")  # every shard opened
        assert sh.cache.held() >= n * one
