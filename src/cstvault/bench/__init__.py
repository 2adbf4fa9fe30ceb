"""Benchmarks: pinned corpus, codec, (later) store and phases."""
