"""Any name a filesystem allows is indexed and printed safely; symbolic links are followed
inside the root, the others listed as skipped with a reason."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

import cstvault
from cstvault import cli, indexer
from cstvault.verify import verify_store


def _bytes_tree(root) -> None:
    r = os.fsencode(root)
    os.makedirs(os.path.join(r, b"d\xfe"))
    with open(os.path.join(r, b"bad\xff.py"), "wb") as f:
        f.write(b"def f():\n    return 1\n")
    with open(os.path.join(r, b"d\xfe", b"x\xfd.py"), "wb") as f:
        f.write(b"def g():\n    return 2\n")
    (root / "ok.py").write_bytes(b"x = 1\n")


def test_names_that_are_not_utf8_are_indexed(tmp_path):
    _bytes_tree(tmp_path)
    res = CliRunner().invoke(cli.main, ["index", str(tmp_path), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    with cstvault.open(tmp_path) as store:
        paths = sorted(f.path for f in store.files())
        assert paths == ["bad\udcff.py", "d\udcfe/x\udcfd.py", "ok.py"]
        assert store.tree("d\udcfe/x\udcfd.py").text == b"def g():\n    return 2\n"
        assert store.files_with_symbol("g") == ["d\udcfe/x\udcfd.py"]
        assert verify_store(store).mismatched == 0
    again = indexer.index(tmp_path, jobs=1)
    assert again.unchanged == 3 and again.files == 0
    os.unlink(os.path.join(os.fsencode(tmp_path), b"bad\xff.py"))
    assert indexer.index(tmp_path, jobs=1).removed == 1
    res = CliRunner().invoke(cli.main, ["show", "d\udcfe/x\udcfd.py:1:5", "--store",
                                        str(tmp_path)])  # fmt: skip
    assert res.exit_code == 0 and "identifier" in res.output
    res = CliRunner().invoke(cli.main, ["stats", "--store", str(tmp_path), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["files"] == 2


def test_symlinks_inside_followed_once_others_skipped_with_a_reason(tmp_path):
    root = tmp_path / "root"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_bytes(b"a = 1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_bytes(b"s = 1\n")
    (root / "alias.py").symlink_to(root / "pkg" / "a.py")  # inside: followed
    (root / "linked").symlink_to(root / "pkg")  # a directory inside: followed once
    (root / "pkg" / "up").symlink_to(root)  # a loop
    (root / "out").symlink_to(outside)  # leaves the root
    (root / "out.py").symlink_to(outside / "secret.py")
    (root / "dangling.py").symlink_to(root / "missing.py")
    res = CliRunner().invoke(cli.main, ["index", str(root), "--jobs", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    reasons = {r["path"]: r["reason"] for r in out["skipped_files"]}
    assert reasons["out"].startswith("symlink: leads outside the root")
    assert reasons["out.py"].startswith("symlink: leads outside the root")
    assert reasons["dangling.py"].startswith("symlink: broken")
    assert reasons["pkg/up"].startswith("symlink: loop")
    with cstvault.open(root) as store:
        assert sorted(f.path for f in store.files()) == ["alias.py", "linked/a.py", "pkg/a.py"]
        stats = store.stats()
        assert {r["path"] for r in stats["skipped_files"]} == set(reasons)
    res = CliRunner().invoke(cli.main, ["stats", "--store", str(root)])
    assert "skipped out: symlink: leads outside the root" in res.output
    (root / "out").unlink()  # a link gone: its skip record goes too
    indexer.index(root, jobs=1)
    with cstvault.open(root) as store:
        assert "out" not in {r["path"] for r in store.stats()["skipped_files"]}
