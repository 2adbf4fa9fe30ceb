"""One writer at a time: index, freeze and gc hold the store's writer lock; readers never."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor

import pytest
from click.testing import CliRunner

import cstvault
from cstvault import cli, indexer
from cstvault.freeze import freeze
from cstvault.store import Store, StoreLocked
from cstvault.store.lock import LOCK, WriterLock, holder
from test_cli import make_repo

HOLDER = textwrap.dedent(
    """
    import sys, time
    from cstvault.store import Store
    store = Store.open(sys.argv[1], write=True)
    print("HELD", flush=True)
    time.sleep(float(sys.argv[2]))
    store.close()
    """
)


@pytest.fixture()
def repo(tmp_path):
    make_repo(tmp_path)
    indexer.index(tmp_path, jobs=1)
    return tmp_path


def _hold(store_dir, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(store_dir), str(seconds)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "HELD"
    return child


def test_a_second_writer_is_refused_with_the_holders_pid_and_command(repo):
    store_dir = repo / ".cstvault"
    child = _hold(store_dir, 30)
    try:
        for attempt in (lambda: indexer.index(repo, jobs=1),
                        lambda: freeze(store_dir, jobs=1),
                        lambda: cstvault.open(repo).gc()):  # fmt: skip
            with pytest.raises(StoreLocked) as err:
                attempt()
            assert f"pid {child.pid}" in str(err.value)
            assert "-c" in str(err.value)  # the holder's command line
        assert holder(store_dir)["pid"] == child.pid
        # readers are never blocked
        with cstvault.open(repo) as reader:
            assert reader.tree("sub/keep.py").text == b"y = 2\n"
        res = CliRunner().invoke(cli.main, ["gc", "--store", str(store_dir)])
        assert res.exit_code == 1
        assert f"being written by pid {child.pid}" in res.output
        assert "Traceback" not in res.output
    finally:
        child.kill()
        child.wait()


def test_a_second_writer_waits_for_the_first(repo):
    child = _hold(repo / ".cstvault", 0.5)
    t0 = time.monotonic()
    res = CliRunner().invoke(cli.main, ["index", str(repo), "--jobs", "1", "--json",
                                        "--wait", "20"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert time.monotonic() - t0 >= 0.3
    assert child.wait() == 0
    assert json.loads(res.output)["unchanged"] > 0


def test_the_kernel_releases_the_lock_of_a_killed_writer(repo):
    child = _hold(repo / ".cstvault", 60)
    child.send_signal(signal.SIGKILL)
    child.wait()
    indexer.index(repo, jobs=1)  # no wait needed
    with Store.open(repo, write=True) as store:
        assert store.gc()["orphan_blobs"] == 0


def test_one_writing_store_per_process_unless_joined(repo):
    with Store.open(repo, write=True), pytest.raises(StoreLocked, match="this process"):
        Store.open(repo, write=True)
    with WriterLock(repo / ".cstvault", joinable=True):  # what `cstvault index` holds
        indexer.index(repo, jobs=1)
        freeze(repo / ".cstvault", jobs=1)


def test_a_reading_store_cannot_write(repo):
    with cstvault.open(repo) as store, pytest.raises(StoreLocked, match="for reading"):
        store.catalog.begin()


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_forked_workers_do_not_keep_the_lock(repo):
    store_dir = repo / ".cstvault"
    lock = WriterLock(store_dir)
    with ProcessPoolExecutor(1) as pool:
        busy = pool.submit(_sleep, 3)
        time.sleep(0.2)  # the worker has forked while the lock was held
        lock.release()
        child = _hold(store_dir, 0)  # another process gets it while the worker lives
        assert child.wait() == 0
        assert not busy.done()
    assert (store_dir / LOCK).exists()
