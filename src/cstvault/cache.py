"""Hot / warm / cold tiers in RAM over the frozen tier on disk, under one byte budget.

- hot: decoded trees (column buffers + structure index + the record they came from);
- warm: the raw tree record and source bytes (a hot tree's text not yet read is fetched
  again when the tree is rebuilt);
- cold: the same, recompressed with fast zstd (level 1);
- frozen: the zstd-19 frames in segment files (read by the store, which builds the tree
  on a miss and hands it to `admit`).

Policy (recency and frequency): every access promotes to hot; each tier is an LRU. When hot
is over its share, its least recent tree is demoted to warm if it was used more than once,
else straight to cold; warm overflows into cold; cold overflows are simply dropped (the frozen
tier still has them). Budgets are enforced on the real byte sizes of the buffers held.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

import zstandard

from ._native import release_free_memory
from .sources import DeferredSource

TIERS = ("hot", "warm", "cold", "frozen")
# bytes of trees admitted or evicted between two returns of free heap to the OS: trimming
# after every MB kept RSS a little lower but made cold opens pay for re-faulting the returned
# pages. Admissions count too: building a large tree frees temporaries of about its size
# (the frame, the decoder's stacks), which counting evictions alone left in the heap until
# enough smaller trees had been evicted (RSS spikes of 20-30 MB after a large file)
TRIM_EVERY = 8 * 1024 * 1024
_LATENCY_SAMPLES = 4096  # per tier, a ring of the latest latencies (32 KiB of doubles)


@dataclass(frozen=True)
class CacheConfig:
    max_memory_mb: float = 64.0
    hot_percent: float = 50.0
    warm_percent: float = 30.0
    cold_percent: float = 20.0

    def __post_init__(self) -> None:
        if self.max_memory_mb < 0 or min(self.hot_percent, self.warm_percent,
                                         self.cold_percent) < 0:  # fmt: skip
            raise ValueError("cache sizes must not be negative")
        if self.hot_percent + self.warm_percent + self.cold_percent > 100.0 + 1e-9:
            raise ValueError("tier percentages add up to more than 100")

    def budget(self, tier: str) -> int:
        share = {"hot": self.hot_percent, "warm": self.warm_percent, "cold": self.cold_percent}
        return int(self.max_memory_mb * 1024 * 1024 * share[tier] / 100.0)


@dataclass
class TierStats:
    hits: int = 0
    misses: int = 0
    bytes: int = 0
    latencies: array = field(default_factory=lambda: array("d"))
    _next: int = 0

    def record(self, seconds: float) -> None:
        if len(self.latencies) < _LATENCY_SAMPLES:
            self.latencies.append(seconds)
        else:
            self.latencies[self._next] = seconds
            self._next = (self._next + 1) % _LATENCY_SAMPLES

    def summary(self, items: int) -> dict:
        lat = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 4)

        return {"items": items, "bytes": self.bytes, "hits": self.hits, "misses": self.misses,
                "p50_ms": pct(0.50), "p99_ms": pct(0.99)}  # fmt: skip


@dataclass
class _Hot:
    tree: object
    record: bytes
    source: bytes
    nbytes: int
    uses: int = 1


def _exact(data: bytes) -> bytes:
    """A copy holding exactly len(data) bytes: zstandard's compress() returns a bytes object
    whose allocation keeps the full compress bound (about the input size)."""
    return bytes(memoryview(data))


def _ram(source: object) -> int:
    """Heap bytes of a source: bytes count; a deferred text counts once read (`grew`)."""
    return len(source) if isinstance(source, bytes) else 0


def _text(source: object) -> bytes | None:
    """A hot tree's text to keep when it is demoted: its bytes, once read."""
    if isinstance(source, DeferredSource):
        source = source.resolved
    return source if isinstance(source, bytes) else None


class TieredCache:
    """Maps a key to its decoded tree in RAM. `get` serves the hot, warm and cold tiers; on
    a miss the caller reads the frozen frames and hands the tree it built to `admit`."""

    def __init__(self, config: CacheConfig):
        self.config = config
        self._full = {t: config.budget(t) for t in ("hot", "warm", "cold")}
        self._budget = dict(self._full)
        self._held: dict[object, int] = {}  # what else the store holds, by holder (`hold`)
        self.hot: OrderedDict[object, _Hot] = OrderedDict()
        self.warm: OrderedDict[object, tuple[bytes, object]] = OrderedDict()
        self.cold: OrderedDict[object, tuple[bytes, object, int]] = OrderedDict()
        self.stats = {t: TierStats() for t in TIERS}
        self._fast = zstandard.ZstdCompressor(level=1)
        self._churned = 0  # bytes admitted or evicted since the last trim
        # a small budget trims more often: what the heap holds freed stays a share of it
        self._trim_every = min(TRIM_EVERY, max(1 << 20, int(config.max_memory_mb * 2**17)))
        self._dctx = zstandard.ZstdDecompressor()

    def holds(self, blob: object) -> bool:
        """Whether a RAM tier has `blob`."""
        return blob in self.hot or blob in self.warm or blob in self.cold

    def get(self, blob: object, source, build):
        """The tree of `blob` from the RAM tier that holds it, promoted to hot; None when no
        tier does.

        `source(blob)` reads the source again for a tier that kept the record but not the
        source; `build(record, source)` decodes them into (tree, bytes of the tree's buffers,
        the source the tree uses).
        """
        t0 = time.perf_counter()
        entry = self.hot.get(blob)
        if entry is not None:
            self.hot.move_to_end(blob)
            entry.uses += 1
            self._hit("hot", t0)
            return entry.tree
        if blob in self.warm:
            record, src = self.warm.pop(blob)
            self.stats["warm"].bytes -= len(record) + _ram(src)
            if src is None:  # a text never read is fetched again
                src = source(blob)
            tier = "warm"
        elif blob in self.cold:
            crec, csrc, _ = self.cold.pop(blob)
            self.stats["cold"].bytes -= len(crec) + _ram(csrc)
            record = self._dctx.decompress(crec)
            src = self._dctx.decompress(csrc) if csrc is not None else source(blob)
            self.stats["warm"].misses += 1
            tier = "cold"
        else:
            return None
        self.stats["hot"].misses += 1
        tree, tree_bytes, src = build(record, src)
        return self._admit(blob, tree, record, src, tree_bytes, tier, t0)

    def admit(self, blob: object, tree: object, record: bytes, source: object,
              tree_bytes: int, t0: float) -> object:  # fmt: skip
        """Keep, as hot, a tree the caller built from the frozen tier after a miss of `get`,
        counted as a frozen hit taking the time since `t0`."""
        for tier in ("hot", "warm", "cold"):
            self.stats[tier].misses += 1
        return self._admit(blob, tree, record, source, tree_bytes, "frozen", t0)

    def _admit(self, blob: object, tree: object, record: bytes, source: object,
               tree_bytes: int, tier: str, t0: float) -> object:  # fmt: skip
        nbytes = tree_bytes + len(record) + _ram(source)
        self.hot[blob] = _Hot(tree, record, source, nbytes)
        self.stats["hot"].bytes += nbytes
        self._churned += nbytes
        self._enforce()
        self._hit(tier, t0)
        return tree

    def grew(self, blob: object, nbytes: int) -> None:
        """A hot tree now holds `nbytes` more (its deferred text came from the store)."""
        entry = self.hot.get(blob)
        if entry is not None:
            entry.nbytes += nbytes
            self.stats["hot"].bytes += nbytes
            self._enforce()

    def hold(self, holder: object, nbytes: int) -> None:
        """Charge to the budget what `holder` (a store's zstd contexts and decompressed
        packs, an open shard) now holds besides the tiers: the tiers share what is left, so
        the budget bounds everything the store keeps in RAM, over however many shards."""
        if self._held.get(holder) == nbytes:
            return
        self._held[holder] = nbytes
        total = int(self.config.max_memory_mb * 1024 * 1024)
        left = max(0.0, 1.0 - sum(self._held.values()) / total) if total else 0.0
        self._budget = {t: int(b * left) for t, b in self._full.items()}
        self._enforce()

    def held(self) -> int:
        """Bytes charged by `hold`."""
        return sum(self._held.values())

    def _hit(self, tier: str, t0: float) -> None:
        s = self.stats[tier]
        s.hits += 1
        s.record(time.perf_counter() - t0)

    def _enforce(self) -> None:
        hot, warm, cold = self.stats["hot"], self.stats["warm"], self.stats["cold"]
        while hot.bytes > self._budget["hot"] and self.hot:
            blob, e = self.hot.popitem(last=False)
            hot.bytes -= e.nbytes
            self._churned += e.nbytes
            kept = _text(e.source)
            if e.uses > 1:
                self.warm[blob] = (e.record, kept)
                warm.bytes += len(e.record) + _ram(kept)
            else:
                self._to_cold(blob, e.record, kept)
        while warm.bytes > self._budget["warm"] and self.warm:
            blob, (record, source) = self.warm.popitem(last=False)
            warm.bytes -= len(record) + _ram(source)
            self._to_cold(blob, record, source)
        while cold.bytes > self._budget["cold"] and self.cold:
            _, (crec, csrc, _) = self.cold.popitem(last=False)
            cold.bytes -= len(crec) + _ram(csrc)
        if self._churned >= self._trim_every:
            self._churned = 0
            release_free_memory()

    def _to_cold(self, blob: object, record: bytes, source: object) -> None:
        if len(record) + _ram(source) > 8 * self._budget["cold"]:
            return  # cannot fit even well compressed: leave it to the frozen tier
        crec = _exact(self._fast.compress(record))
        csrc = _exact(self._fast.compress(source)) if source is not None else None
        if len(crec) + _ram(csrc) > self._budget["cold"]:
            return  # would not fit at all: leave it to the frozen tier
        self.cold[blob] = (crec, csrc, len(record) + _ram(source))
        self.stats["cold"].bytes += len(crec) + _ram(csrc)

    def summary(self) -> dict:
        items = {"hot": len(self.hot), "warm": len(self.warm), "cold": len(self.cold),
                 "frozen": 0}  # fmt: skip
        return {t: self.stats[t].summary(items[t]) for t in TIERS}

    def bytes_in_ram(self) -> int:
        return sum(self.stats[t].bytes for t in ("hot", "warm", "cold"))
