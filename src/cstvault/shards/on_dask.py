"""Running shard tasks on Dask (the optional extra `cstvault[dask]`; nothing else imports it):
a `build.Runner` for indexing (`build.build_shard`) and whole-store work (`fanout.py`).

`--dask local:N` starts a `LocalCluster` of N single-threaded worker processes; any other
value is a scheduler address (`tcp://host:8786`). Each shard is one task (`build.build_shard`)
writing its store where the workers see the same path as the driver (a shared filesystem).
A worker that dies mid-task has its task rerun elsewhere by the scheduler; the task resumes
the shard its predecessor left (committed batches are kept, the rest is redone).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .build import Runner, results

CONNECT_TIMEOUT_S = 10


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

    try:
        yield client_runner(client, retries=retries)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def client_runner(client, *, retries: int = 1) -> Runner:
    """A runner sending each task to the cluster of a `distributed.Client` the caller holds."""
    from distributed import as_completed

    def run(fn: Callable, items: list, names: list[str]) -> Iterator:
        run_id = uuid.uuid4().hex[:8]
        keys = [f"cstvault-{fn.__name__}-{n}-{run_id}" for n in names]
        futures = client.map(fn, items, pure=False, retries=retries, key=keys)
        by_key = {f.key: n for f, n in zip(futures, names, strict=True)}
        yield from results(as_completed(futures), lambda f: by_key[f.key], " on Dask")

    return run
