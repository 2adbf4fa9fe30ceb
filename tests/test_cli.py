"""End-to-end: `cstvault verify` on a repository the test writes."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from cstvault import cli, verify
from cstvault.codec import decode
from cstvault.tree import Tree
from cstvault.walk import iter_files
from snippets import SNIPPETS

EXT = {"python": "py", "javascript": "js", "typescript": "ts", "tsx": "tsx", "rust": "rs",
       "go": "go", "java": "java", "c": "c", "cpp": "cpp"}


def make_repo(root):
    for lang, cases in SNIPPETS.items():
        for name, src in cases.items():
            (root / f"{lang}_{name}.{EXT[lang]}").write_bytes(src)
    (root / "ignored").mkdir()
    (root / "ignored" / "x.py").write_bytes(b"x = 1\n")
    (root / "sub").mkdir()
    (root / "sub" / "keep.py").write_bytes(b"y = 2\n")
    (root / "sub" / "drop.py").write_bytes(b"z = 3\n")
    (root / "sub" / ".gitignore").write_text("drop.py\n")
    (root / ".gitignore").write_text("ignored/\n")
    (root / "blob.c").write_bytes(b"\0\0\0 binary")
    (root / "README.txt").write_text("not code")


def test_walk_respects_gitignore(tmp_path):
    make_repo(tmp_path)
    found = {p.relative_to(tmp_path).as_posix() for p, _ in iter_files([tmp_path])}
    assert "sub/keep.py" in found
    assert "sub/drop.py" not in found and "ignored/x.py" not in found
    assert "README.txt" not in found
    assert len(found) == 3 * len(SNIPPETS) + 2  # snippets, keep.py, blob.c


def test_verify_json(tmp_path):
    make_repo(tmp_path)
    res = CliRunner().invoke(cli.main, ["verify", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["files"] == 3 * len(SNIPPETS) + 1
    assert out["ok"] == out["files"] and out["mismatched"] == 0
    assert out["skipped"] == [{"path": str(tmp_path / "blob.c"),
                               "reason": "binary: NUL byte in the first 8 KiB"}]
    assert out["lines"] > 100 and out["nodes"] > 1000
    assert out["mismatches"] == []


def test_verify_table_output(tmp_path):
    (tmp_path / "a.py").write_bytes(b"x = 1\n")
    res = CliRunner().invoke(cli.main, ["verify", str(tmp_path)])
    assert res.exit_code == 0
    assert "all trees round-trip" in res.output


def test_verify_reports_mismatch_and_fails(tmp_path, monkeypatch):
    (tmp_path / "a.py").write_bytes(b"def f():\n    return 1\n")
    def damaged(record):
        cols = decode(record)
        cols.end = cols.end.copy()
        cols.end[3] += 1
        cols.kind = np.where(np.arange(len(cols)) == 2, 1, cols.kind).astype(np.uint16)
        return Tree(cols, b""), 0, 0, 0

    monkeypatch.setattr(verify, "tree_from_record", damaged)
    res = CliRunner().invoke(cli.main, ["verify", str(tmp_path), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.output)
    assert out["mismatched"] == 1
    attrs = {(m["node"], m["attribute"]) for m in out["mismatches"]}
    assert (3, "end_byte") in attrs and (2, "kind_id") in attrs and (2, "type") in attrs
