"""Running shard tasks on Dask (the optional extra `cstvault[dask]`; nothing else imports it):
a `build.Runner` for indexing (`build.build_shard`) and whole-store work (`fanout.py`).

`--dask local:N` starts a `LocalCluster` of N single-threaded worker processes (each
restarted after each task: `client_runner(fresh=True)`); any other value is a scheduler
address (`tcp://host:8786`). Each shard is one task (`build.build_shard`) writing its store
where the workers see the same path as the driver (a shared filesystem).
A worker that dies mid-task has its task rerun elsewhere by the scheduler; the task resumes
the shard its predecessor left (committed batches are kept, the rest is redone).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .build import Runner, results

CONNECT_TIMEOUT_S = 10
RESTART_TIMEOUT_S = 60


class DaskUnavailable(RuntimeError):
    """Dask is not installed, or its scheduler cannot be reached."""


@contextmanager
def dask_runner(address: str, *, retries: int = 1) -> Iterator[Runner]:
    """A runner sending each shard task to the Dask cluster at `address` (or a local one)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise DaskUnavailable("Dask is not installed: pip install 'cstvault[dask]'") from exc
    cluster = None
    try:
        if address.startswith("local:"):
            workers = int(address.split(":", 1)[1] or 1)
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0",  # a free port: 8787 may be taken
                                   silence_logs=logging.ERROR)  # fmt: skip
            client = Client(cluster)
        else:
            client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise DaskUnavailable(f"cannot reach the Dask scheduler at {address}: {exc}") from exc

    try:  # a cluster of its own: each task in a fresh worker process
        yield client_runner(client, retries=retries, fresh=cluster is not None)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def client_runner(client, *, retries: int = 1, fresh: bool = False) -> Runner:
    """A runner sending each task to the cluster of a `distributed.Client` the caller holds.
    With `fresh` (a cluster cstvault started), at most one task per worker is out at a
    time, and a worker that finished one is restarted (by its nanny) before the next is
    sent: a task's peak is then its own, not its own on top of what earlier tasks left in
    the process (each left ~40 MB: heap the allocators keep, grammars' pages mapped)."""
    from distributed import as_completed

    def run(fn: Callable, items: list, names: list[str]) -> Iterator:
        run_id = uuid.uuid4().hex[:8]
        keys = [f"cstvault-{fn.__name__}-{n}-{run_id}" for n in names]
        if not fresh:
            futures = client.map(fn, items, pure=False, retries=retries, key=keys)
            by_key = {f.key: n for f, n in zip(futures, names, strict=True)}
            yield from results(as_completed(futures), lambda f: by_key[f.key], " on Dask")
            return
        todo = list(zip(items, keys, names, strict=True))[::-1]
        name_of: dict = {}
        used: set[str] = set()  # workers that were given a task (a restarted one is new)

        def fresh_worker() -> str | None:
            """A worker that has run no task and runs none (a restarted one may still be
            joining: waited for), None if none comes."""
            deadline = time.monotonic() + RESTART_TIMEOUT_S
            while True:
                free = sorted(w for w, ks in client.processing().items()
                              if not ks and w not in used)  # fmt: skip
                if free or time.monotonic() > deadline:
                    return free[0] if free else None
                time.sleep(0.05)

        def send() -> object:
            item, key, name = todo.pop()
            name_of[key] = name
            worker = fresh_worker()
            if worker is None:
                return client.submit(fn, item, pure=False, retries=retries, key=key)
            used.add(worker)  # (another runs it if this one dies)
            return client.submit(fn, item, pure=False, retries=retries, key=key,
                                 workers=[worker], allow_other_workers=True)  # fmt: skip

        width = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
        done = as_completed([send() for _ in range(min(width, len(todo)))])
        for fut in done:
            ran = set(client.who_has([fut]).get(fut.key, ()))
            yield from results([fut], lambda f: name_of[f.key], " on Dask")
            fut.release()
            # restarted once idle (a task the scheduler queued behind this one runs first)
            idle = [w for w, ks in client.processing(list(ran)).items() if not ks]
            if idle:
                client.restart_workers(idle, timeout=RESTART_TIMEOUT_S,
                                       raise_for_error=False)  # their nannies start others
            if todo:
                done.add(send())

    return run
