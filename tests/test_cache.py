"""Tiered cache: one byte budget over hot / warm / cold, recency + frequency policy."""

from __future__ import annotations

import os
import platform

import pytest

import cstvault
from cstvault import indexer
from cstvault.cache import CacheConfig


@pytest.fixture
def store_root(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for i in range(40):
        body = "".join(f"def f{i}_{k}(a, b):\n    return a * {k} + b\n\n" for k in range(5 + i))
        (root / f"m{i:02d}.py").write_text(body)
    indexer.index(root, jobs=1)
    return root


def test_freeze_trains_dictionaries_and_later_runs_use_them(store_root):
    from cstvault.freeze import freeze

    with cstvault.open(store_root) as store:  # index alone: fast frames, no dictionary yet
        assert store.catalog.dictionaries() == {}
        before = {b.id: b.tree[2] + b.src[2] for b in store.catalog.blobs()}
    freeze(store_root / ".cstvault", jobs=2)
    with cstvault.open(store_root) as store:
        dicts = store.catalog.dictionaries()
        assert {("python", "tree"), ("python", "source")} == set(dicts)
        blobs = list(store.catalog.blobs())
        # tree records with the dictionary (in 16 KiB packs); the 40 small sources in one
        # 1 MiB pack, which goes without: at that size a dictionary only costs
        assert all(b.tree_dict == dicts[("python", "tree")][0] for b in blobs)
        assert all(b.src_dict == 0 for b in blobs) and len({b.src for b in blobs}) == 1
        frames = {b.tree for b in blobs} | {b.src for b in blobs}  # a pack counts once
        assert sum(loc[2] for loc in frames) < sum(before.values())
        assert store.source("m07.py") == (store_root / "m07.py").read_bytes()
        assert store.tree("m05.py").text == (store_root / "m05.py").read_bytes()
        assert store.stats()["dictionary_bytes"] > 0
    (store_root / "new.py").write_text("def fresh(a):\n    return a\n")
    indexer.index(store_root, jobs=1)  # the store's dictionaries, already at index time
    with cstvault.open(store_root) as store:
        (new,) = (b for b in store.catalog.blobs() if b.id not in before)
        assert new.tree_dict == dicts[("python", "tree")][0]
        assert store.tree("new.py").text == (store_root / "new.py").read_bytes()


def test_config_validation():
    with pytest.raises(ValueError):
        CacheConfig(hot_percent=80, warm_percent=30, cold_percent=0)
    with pytest.raises(ValueError):
        CacheConfig(max_memory_mb=-1)
    assert CacheConfig(max_memory_mb=1, hot_percent=50).budget("hot") == 512 * 1024


def test_budget_holds_after_every_access(store_root):
    cfg = CacheConfig(max_memory_mb=0.25, hot_percent=50, warm_percent=30, cold_percent=20)
    with cstvault.open(store_root, cfg) as store:
        paths = [f.path for f in store.files()]
        for step in range(300):
            store.tree(paths[(step * 7) % len(paths)])
            for tier in ("hot", "warm", "cold"):
                assert store.cache.stats[tier].bytes <= cfg.budget(tier)
            assert store.cache.bytes_in_ram() <= cfg.max_memory_mb * 1024 * 1024
        stats = store.stats()
        assert stats["cache_bytes"] <= stats["budget_bytes"]
        assert stats["rss_bytes"] > 0
        tiers = stats["tiers"]
        assert set(tiers) == {"hot", "warm", "cold", "frozen"}
        assert tiers["frozen"]["hits"] > 0 and tiers["hot"]["misses"] > 0
        for t in tiers.values():
            assert {"items", "bytes", "hits", "misses", "p50_ms", "p99_ms"} <= set(t)


def test_promotion_and_demotion_policy(store_root):
    # a hot tier that holds about one tree: everything else is pushed down a tier
    with cstvault.open(store_root, CacheConfig(max_memory_mb=64)) as probe:
        probe.tree("m39.py")
        one = probe.cache.stats["hot"].bytes
        held = probe.cache.held()  # its zstd context: charged, the tiers share the rest
    mb = (one * 1.1 / 0.5 + held) / (1024 * 1024)  # the hot share: the largest tree, no more
    cfg = CacheConfig(max_memory_mb=mb, hot_percent=50, warm_percent=25, cold_percent=25)
    with cstvault.open(store_root, cfg) as store:
        cache = store.cache
        expected = str(store.tree("m10.py").root_node)
        store.tree("m10.py")  # second use: a hot hit, and now "frequent"
        assert cache.stats["hot"].hits == 1
        store.tree("m39.py")  # pushes m10 out of hot; used twice, so it goes to warm
        assert cache.hot.keys() - cache.warm.keys() and cache.warm
        store.tree("m20.py")  # pushes m39 (used once) straight to cold
        assert cache.cold
        assert str(store.tree("m10.py").root_node) == expected
        assert cache.stats["warm"].hits + cache.stats["cold"].hits >= 1
        for tier in ("hot", "warm", "cold"):
            assert cache.stats[tier].bytes <= cfg.budget(tier)


def test_trees_from_every_tier_are_identical(store_root):
    cfg = CacheConfig(max_memory_mb=0.05, hot_percent=40, warm_percent=30, cold_percent=30)
    with cstvault.open(store_root, cfg) as small, cstvault.open(store_root) as big:
        for f in list(small.files())[::3]:
            for _ in range(3):
                assert str(small.tree(f.path).root_node) == str(big.tree(f.path).root_node)


def test_texts_read_are_kept_with_their_trees_and_counted(store_root):
    cfg = CacheConfig(max_memory_mb=0.2, hot_percent=40, warm_percent=30, cold_percent=30)
    with cstvault.open(store_root, cfg) as store:
        paths = [f.path for f in store.files()]
        for _ in range(2):
            for p in paths:
                assert store.tree(p).text == (store_root / p).read_bytes()
        cache = store.cache
        assert cache.warm or cache.cold
        assert all(isinstance(src, bytes) for _, src in cache.warm.values())
        assert all(src is not None for _, src, _ in cache.cold.values())
        for e in cache.hot.values():
            assert isinstance(e.tree._src, bytes)
            assert e.nbytes >= len(e.record) + len(e.tree._src)  # text in the budget
        assert cache.stats["hot"].bytes == sum(e.nbytes for e in cache.hot.values())
        for p in paths:  # promoted back from warm / cold with the text they kept
            assert store.tree(p).text == (store_root / p).read_bytes()


def test_release_free_memory_is_safe():
    from cstvault._native import release_free_memory

    assert release_free_memory() in (True, False)


@pytest.mark.parametrize("working_tree", [True, False])  # frozen misses straight / via `get`
def test_every_access_is_counted_once_in_its_tier(store_root, working_tree):
    with cstvault.Store.open(store_root / ".cstvault", CacheConfig(max_memory_mb=64),
                             working_tree=working_tree) as store:  # fmt: skip
        paths = sorted(f.path for f in store.files())[:5]
        for path in paths + paths[:2]:  # five cold opens, then two hot hits
            assert store.tree(path).root_node.type == "module"
        s = store.cache.stats
        assert (s["frozen"].hits, s["hot"].hits) == (5, 2)
        assert (s["hot"].misses, s["warm"].misses, s["cold"].misses) == (5, 5, 5)
        assert len(s["frozen"].latencies) == 5 and len(s["hot"].latencies) == 2
        assert len(store.cache.hot) == 5 and store.cache.holds(next(iter(store.cache.hot)))


def test_free_heap_is_returned_after_every_trim_every_bytes_admitted_or_evicted(
    store_root, monkeypatch
):
    from cstvault import cache as cache_mod

    every = 64 * 1024
    trims: list[int] = []
    monkeypatch.setattr(cache_mod, "release_free_memory", lambda: trims.append(1) or True)
    monkeypatch.setattr(cache_mod, "TRIM_EVERY", every)
    with cstvault.open(store_root, CacheConfig(max_memory_mb=64)) as store:  # nothing evicted
        paths = [f.path for f in store.files()]
        for path in paths:
            store.tree(path)
        assert not store.cache.warm and not store.cache.cold
        sizes = [e.nbytes for e in store.cache.hot.values()]
    # building a tree frees temporaries of about its size: admissions alone trim, once per
    # TRIM_EVERY bytes (the count restarts after each trim, so each one covers less than
    # TRIM_EVERY plus one tree)
    admitted = sum(sizes)
    assert admitted // (every + max(sizes)) <= len(trims) <= admitted // every
    assert len(trims) >= 3
    trims.clear()
    with cstvault.open(store_root, CacheConfig(max_memory_mb=0)) as store:  # all evicted
        for path in paths:
            store.tree(path)
    assert 2 * admitted // (every + max(sizes)) <= len(trims) <= 2 * admitted // every


def _anon_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/status"),
    reason="glibc heap behaviour, Linux /proc",
)
def test_a_large_tree_returns_its_heap_when_dropped():
    from cstvault._native import release_free_memory

    big = bytearray(16 * 2**20)  # freeing a mapped chunk this large makes glibc serve
    del big  # later buffers up to its size from the heap, where frees stay resident
    src = b"x = [" + b"1, " * 200_000 + b"]\n"
    record = cstvault.encode(src, "python")
    release_free_memory()  # what earlier work left free is not counted below
    before = _anon_rss()
    tree = cstvault.load(record, src)
    assert len(tree) > 400_000
    grown = _anon_rss() - before
    assert grown > 8 * 2**20  # 31 bytes a node
    del tree
    assert _anon_rss() - before < grown / 4


def test_what_the_store_holds_besides_trees_is_charged_to_the_budget(store_root):
    """`hold` charges the budget: the tiers share what is left, evicting to fit; a store
    charges its zstd contexts and decompressed packs."""
    from cstvault.cache import TieredCache

    budget = 1 << 20
    cache = TieredCache(CacheConfig(max_memory_mb=1))
    for k in range(400):
        cache.admit(k, object(), os.urandom(2000), None, 2000, 0.0)
        cache.get(k, None, None)  # used twice: demoted to warm, not straight to cold
    full = cache.bytes_in_ram()
    assert full > budget * 0.7
    cache.hold("test", budget * 3 // 4)
    assert cache.held() == budget * 3 // 4
    assert cache.bytes_in_ram() <= budget // 4 < full
    for k in range(400, 800):  # and it stays within what is left while reading on
        cache.admit(k, object(), os.urandom(2000), None, 2000, 0.0)
        assert cache.bytes_in_ram() <= budget // 4
    cache.hold("test", 0)
    for k in range(800, 1200):
        cache.admit(k, object(), os.urandom(2000), None, 2000, 0.0)
    assert cache.bytes_in_ram() > budget // 2
    with cstvault.open(store_root, CacheConfig(max_memory_mb=64)) as store:
        store.tree(next(store.files()).path)
        assert store.cache.held() > 0  # its zstd context, as zstd sizes it
