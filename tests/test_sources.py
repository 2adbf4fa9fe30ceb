"""Working files changed under a reader: it never crashes and a tree only ever returns the
bytes it was parsed from, whatever happens to the file and whenever."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import cstvault
from cstvault import indexer

BODY = b"".join(b"def f%d(x):\n    return x + %d\n\n" % (k, k) for k in range(400))


def _truncate(p):
    with open(p, "r+b") as f:
        f.truncate(10)


def _same_size_same_mtime(p):
    st = p.stat()
    p.write_bytes(p.read_bytes().replace(b"def f1(", b"def g1("))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _in_place(p):  # rewritten through the same inode, longer
    with open(p, "r+b") as f:
        f.write(b"# rewritten\n" * 5000)


def _replaced(p):  # a new file renamed over it (editors' atomic save)
    tmp = p.with_suffix(".tmp")
    tmp.write_bytes(b"x = 1\n")
    os.replace(tmp, p)


CHANGES = {"truncated": _truncate, "same size and mtime": _same_size_same_mtime,
           "rewritten in place": _in_place, "replaced": _replaced, "deleted": os.unlink}


@pytest.fixture()
def repo(tmp_path):
    for k in range(4):
        (tmp_path / f"m{k}.py").write_bytes(BODY)
    indexer.index(tmp_path, jobs=1)
    return tmp_path


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("when", ["before the text is read", "after the text is read"])
def test_a_changed_working_file_never_shows_other_bytes(repo, change, when):
    path = repo / "m1.py"
    with cstvault.open(repo) as store:
        tree = store.tree("m1.py")
        node = tree.root_node.children[1].child_by_field_name("name")
        if when == "after the text is read":
            assert node.text == b"f1"
        CHANGES[change](path)
        assert node.text == b"f1"
        assert tree.text == BODY
        again = store.tree("m1.py")  # cached or rebuilt: the indexed bytes either way
        assert again.text == BODY
    with cstvault.open(repo) as fresh:  # a new reader: the store's copy
        assert fresh.tree("m1.py").text == BODY


READER = textwrap.dedent(
    """
    import sys
    import cstvault
    store = cstvault.open(sys.argv[1], cstvault.CacheConfig(max_memory_mb=64))
    trees = [store.tree(f"m{k}.py") for k in range(4)]
    texts = [t.text for t in trees]
    print("READ", flush=True)
    sys.stdin.readline()  # the parent truncates the files meanwhile
    for t, before in zip(trees, texts):
        assert t.text == before and t.root_node.children[-1].text.startswith(b"def f399")
    assert all(store.tree(f"m{k}.py").text == before for k, before in enumerate(texts))
    print("OK", flush=True)
    """
)


def test_truncating_files_under_a_reader_process_does_not_kill_it(repo):
    child = subprocess.Popen([sys.executable, "-c", READER, str(repo)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "READ"
    for k in range(4):
        _truncate(repo / f"m{k}.py")
    child.stdin.write("go\n")
    child.stdin.flush()
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip() == "OK"  # no SIGBUS (-7)
