"""`cstvault bench phases` on a small corpus the test writes, and the forms it measures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cstvault import cli
from cstvault.bench import forms, phases
from cstvault.extract import parse_extract
from snippets import SNIPPETS
from test_cli import EXT

ROW_KEYS = {"name", "ram_mb", "disk_mb", "p50_ms", "p99_ms", "lost"}


def write_corpus(root, repeat=3):
    root.mkdir()
    for lang, cases in SNIPPETS.items():
        for name, src in cases.items():
            (root / f"{lang}_{name}.{EXT[lang]}").write_bytes(src * repeat)
    (root / "dup.py").write_bytes(SNIPPETS["python"]["ok"] * repeat)  # dedup has work to do
    return sorted((str(p), lang) for p in root.iterdir()
                  for lang in [next(k for k, e in EXT.items() if p.suffix == "." + e)])  # fmt: skip


def test_bench_phases_small_corpus(tmp_path):
    root = tmp_path / "code"
    write_corpus(root)
    plot = tmp_path / "phases.png"
    args = ["bench", "phases", "--corpus", str(root), "--jobs", "1", "--ops", "300",
            "--work", str(tmp_path / "work"), "--json"]  # fmt: skip
    try:
        import matplotlib  # noqa: F401

        args += ["--plot", str(plot)]
    except ImportError:
        plot = None
    res = CliRunner().invoke(cli.main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    assert [r["name"] for r in out["rows"]] == list(phases.ROWS)
    for r in out["rows"]:
        assert set(r) >= ROW_KEYS, r["name"]
        assert r["lost"] == 0, (r["name"], r["lost_files"])
        assert r["files"] == out["files"] == 3 * len(SNIPPETS) + 1
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"]
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["Baseline"]["disk_mb"] == 0 and rows["Phase 4c"]["disk_mb"] > 0
    assert rows["Baseline"]["ram_mb"] > 0
    measured = [p for p in out["scale"] if not p["projected"]]
    projected = [p for p in out["scale"] if p["projected"]]
    assert len(measured) == 4 and [p["lines"] for p in projected] == [10**8, 10**9]
    assert measured[-1]["lines"] == out["lines"]
    assert all(p["lost"] == 0 for p in measured)
    assert "| Phase 4c |" in phases.markdown(out)
    if plot is not None:
        assert plot.stat().st_size > 1000


@pytest.mark.parametrize("name", ["Phase 1", "Phase 2", "Phase 3"])
def test_forms_rebuild_every_column(tmp_path, name):
    files = write_corpus(tmp_path / "code", repeat=1)
    form = forms.FORMS[name](files, 1)
    for i, (path, lang) in enumerate(files):
        source = Path(path).read_bytes()
        assert phases.digest(form.columns(i), form.source(i)) == phases.digest(
            parse_extract(source, lang), source), path  # fmt: skip
        tree = form.tree(i)
        assert tree.root_node.end_byte <= len(source)
    if name != "Phase 1":  # dedup: the duplicate file shares its entry
        dup = [i for i, (p, _) in enumerate(files) if os.path.basename(p) == "dup.py"][0]
        ok = [i for i, (p, _) in enumerate(files) if p.endswith("python_ok.py")][0]
        assert form.entry[dup] == form.entry[ok]


def test_digest_catches_any_change():
    source = SNIPPETS["python"]["ok"]
    cols = parse_extract(source, "python")
    want = phases.digest(cols, source)
    for column in ("kind", "flags", "size", "start", "end", "field", "grammar"):
        bad = parse_extract(source, "python")
        arr = getattr(bad, column).copy()
        arr[len(arr) // 2] += 1
        setattr(bad, column, arr)
        assert phases.digest(bad, source)[0] != want[0], column
    assert phases.digest(cols, source[:-1] + b" ")[1] != want[1]


def test_projection_is_the_stated_model_not_a_fitted_trend():
    largest = {"lines": 1000, "files": 10, "ram_mb": 20.0, "disk_mb": 14.0}
    p = phases.project(largest, 10**6)
    assert p["disk_mb"] == 14000.0  # bytes per line kept
    assert p["ram_mb"] == round(20.0 + 8 * (10**4 - 10) / 2**20, 1)  # 8 bytes a new file
    assert p["projected"] and "upper bound" in p["model"]


def test_workload_plan_is_seeded_and_in_range():
    sizes = [10, 0, 500, 3]
    a = phases.workload_plan(sizes, 1000, 7)
    b = phases.workload_plan(sizes, 1000, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    files, offsets = a
    assert files.min() >= 0 and files.max() < 4
    assert np.all(offsets < np.maximum(np.array(sizes)[files], 1))
