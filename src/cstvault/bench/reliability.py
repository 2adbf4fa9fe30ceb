"""`cstvault bench reliability`: the store's promises checked by breaking it on purpose.

On a generated repository (several languages, deterministic) each trial runs a writer
(`index`, `freeze` or `gc`) in a child process and then checks the store from outside:

- kills at every named point of the commit protocols (`faults.POINTS`, via
  `CSTVAULT_FAULT`), each point several times (its 1st, 2nd, ... passage), and SIGKILLs at
  random moments of index, freeze and gc runs;
- two writers started at once in every pairing of index, freeze and gc (one must refuse
  with the writer lock's message, or wait for the other with `--wait`);
- random bytes flipped across segments, catalog and path index under a reader;
- working files truncated, rewritten in place, replaced or deleted under a reader.

After every trial the store must open (a store killed while being created must say so and
hold nothing committed), verify against tree-sitter, hold every file the writer reported
committed with its exact bytes, and complete when the writer is re-run. Figures: trials,
crashes landed per point, stores that fail to open or verify, committed files lost, silent
wrong reads, reader crashes: every one but the trials must be 0.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from .. import faults

# a writer in a child: prints "GO", each batch's committed paths, then "DONE";
# exit 3 when the store's writer lock is held by another process
CHILD = textwrap.dedent(
    """
    import sys
    from cstvault import freeze, indexer
    from cstvault.store import Store, StoreLocked
    op, store, repo, wait = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    freeze.BATCH_BLOBS = 16
    print("GO", flush=True)
    def committed(paths):
        sys.stdout.write("".join("C " + p + "\\n" for p in paths))
        sys.stdout.flush()
    try:
        if op == "index":
            indexer.index(repo, store, jobs=1, batch_files=16, on_commit=committed,
                          compact=True, wait=wait)
        elif op == "freeze":
            freeze.freeze(store, jobs=1, wait=wait)
        else:
            with Store.open(store, write=True, wait=wait) as s:
                s.gc()
    except StoreLocked as exc:
        print("LOCKED", exc, flush=True)
        sys.exit(3)
    print("DONE", flush=True)
    """
)

# a reader in a child: checks every file of the store against the originals after each of
# a list of byte flips (made by itself, undone after), printing one line per flip
FLIPPER = textwrap.dedent(
    """
    import json, os, sys
    import cstvault
    from cstvault.bench.reliability import read_all
    store_dir, plan = sys.argv[1], json.loads(sys.stdin.read())
    originals = {p: bytes.fromhex(h) for p, h in plan["originals"].items()}
    sexps = plan["sexps"]
    for k, (rel, offset, xor, hide_index) in enumerate(plan["flips"]):
        path = os.path.join(store_dir, rel)
        with open(path, "r+b") as f:
            f.seek(offset)
            old = f.read(1)
            f.seek(offset)
            f.write(bytes([old[0] ^ xor]))
        if hide_index:
            os.rename(os.path.join(store_dir, "paths.idx"), os.path.join(store_dir, "paths.hid"))
        print("START", k, flush=True)
        outcome = read_all(store_dir, originals, plan["symbols"], sexps)
        print("END", k, json.dumps(outcome), flush=True)
        if hide_index:
            os.rename(os.path.join(store_dir, "paths.hid"), os.path.join(store_dir, "paths.idx"))
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(old)
    """
)

# a reader in a child holding trees while the parent rewrites their working files
HOLDER = textwrap.dedent(
    """
    import json, sys
    import cstvault
    store_dir = sys.argv[1]
    paths = json.loads(sys.stdin.readline())
    originals = {p: bytes.fromhex(h) for p, h in json.loads(sys.stdin.readline()).items()}
    store = cstvault.open(store_dir)
    trees = {p: store.tree(p) for p in paths}
    for k, p in enumerate(paths):
        if k % 2:
            trees[p].text  # half read before the change, half after
    print("HELD", flush=True)
    sys.stdin.readline()
    wrong = 0
    for p, t in trees.items():
        wrong += t.text != originals[p]
        n = t.root_node
        while n.child_count:
            n = n.children[-1]
        wrong += n.text != originals[p][n.start_byte:n.end_byte]
        wrong += store.tree(p).text != originals[p]
    store.close()
    print("WRONG", wrong, flush=True)
    """
)

OPS = ("index", "freeze", "gc")
OP_OF_POINT = {
    "create": "index", "index": "index", "symbols": "index", "pathindex": "index",
    "freeze": "freeze", "gc": "gc", "segments.deleted": "freeze", "segments.truncated": "gc",
}  # fmt: skip


def op_for(point: str) -> str:
    return OP_OF_POINT[point] if point in OP_OF_POINT else OP_OF_POINT[point.split(".")[0]]


def make_repo(root: Path, files: int = 240, seed: int = 1) -> None:
    """A deterministic repository of small Python, JavaScript, C, Go and Rust files."""
    rng = random.Random(seed)
    forms = {
        "py": lambda i, k: f"def f{i}_{k}(x, y={k}):\n    return [x + y] * {rng.randrange(9)}\n\n",
        "js": lambda i, k: f"function f{i}_{k}(a) {{ return a.map(x => x + {k}); }}\n",
        "c": lambda i, k: f"int f{i}_{k}(int a) {{ return a * {rng.randrange(99)}; }}\n",
        "go": lambda i, k: f"func F{i}x{k}(a int) int {{ return a + {k} }}\n",
        "rs": lambda i, k: f"fn f{i}_{k}(a: u32) -> u32 {{ a + {k} }}\n",
    }
    heads = {"go": "package p\n\n"}
    for i in range(files):
        ext = list(forms)[i % len(forms)]
        sub = root / f"pkg{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        body = "".join(forms[ext](i, k) for k in range(3 + rng.randrange(40)))
        (sub / f"m{i:04d}.{ext}").write_text(heads.get(ext, "") + body)


def originals(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes()
            for p in sorted(repo.rglob("*")) if p.is_file()}  # fmt: skip


class Trials:
    """The figures, summed over every kind of trial."""

    KEYS = ("failed_open", "failed_verify", "committed_lost", "silent_wrong", "reader_crashes")

    def __init__(self) -> None:
        self.figures = dict.fromkeys(self.KEYS, 0)
        self.failures: list[str] = []

    def bad(self, key: str, n: int, what: str) -> None:
        if n:
            self.figures[key] += n
            if len(self.failures) < 50:
                self.failures.append(f"{key} +{n}: {what}")


def run_child(op: str, store: Path, repo: Path, fault: str | None = None, wait: float = 0.0,
              kill_after: float | None = None) -> tuple[int, set[str], str]:  # fmt: skip
    """Run a writer; returns (exit code, paths it reported committed, its output)."""
    env = dict(os.environ)
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    child = subprocess.Popen([sys.executable, "-c", CHILD, op, str(store), str(repo), str(wait)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)  # fmt: skip
    if kill_after is not None:
        assert child.stdout is not None
        child.stdout.readline()  # GO: the imports are done
        time.sleep(kill_after)
        child.send_signal(signal.SIGKILL)
    out, err = child.communicate(timeout=600)
    committed = {line[2:] for line in out.splitlines() if line.startswith("C ")}
    return child.returncode, committed, out + err


def check(store: Path, repo_files: dict[str, bytes], committed: set[str], trials: Trials,
          what: str) -> None:  # fmt: skip
    """Open, read every file, verify: the figures a trial adds."""
    from ..store import IncompleteStore, Store
    from ..verify import verify_store

    try:
        s = Store.open(store)
    except (IncompleteStore, FileNotFoundError):
        trials.bad("failed_open", int(bool(committed)), f"{what}: incomplete after commits")
        trials.bad("committed_lost", len(committed), what)
        return
    except Exception as exc:  # noqa: BLE001 - any failure to open is the figure
        trials.bad("failed_open", 1, f"{what}: {exc!r}")
        return
    with s:
        stored = {f.path for f in s.files()}
        lost = {p for p in committed if p not in stored}
        for path in sorted(stored):
            try:
                text, source = s.tree(path).text, s.source(path)
            except Exception as exc:  # noqa: BLE001 - a committed file unreadable is lost
                lost.add(path)
                trials.bad("failed_verify", 1, f"{what}: {path}: {exc!r}")
                continue
            want = repo_files.get(path)
            trials.bad("silent_wrong", int(text != want or source != want), f"{what}: {path}")
        trials.bad("committed_lost", len(lost), f"{what}: {sorted(lost)[:3]}")
        report = verify_store(s)
        trials.bad("failed_verify", report.mismatched, f"{what}: verify")


class Bench:
    def __init__(self, work: Path, files: int, seed: int):
        self.work = work
        self.repo = work / "repo"
        self.rng = random.Random(seed)
        make_repo(self.repo, files, seed)
        self.files = originals(self.repo)
        self.trials = Trials()
        self.templates: dict[str, Path] = {}
        self.unclean: list[str] = []  # errors readers met of kinds not documented

    def template(self, state: str) -> Path:
        """A store in a given state, made once: `indexed` (zstd-1, not frozen, symbols not
        compacted: what freeze starts from) or `garbage` (frozen, then files removed and
        re-indexed, plus an unreferenced tail: what gc has work in)."""
        from .. import indexer
        from ..freeze import freeze

        if state in self.templates:
            return self.templates[state]
        store = self.work / f"template-{state}"
        indexer.index(self.repo, store, jobs=1, batch_files=16, compact=False)
        if state == "garbage":
            freeze(store, jobs=1)
            moved = self.work / "moved"
            moved.mkdir(exist_ok=True)
            for p in sorted(self.repo.rglob("*.py"))[::3]:
                shutil.move(p, moved / p.name)
            indexer.index(self.repo, store, jobs=1, batch_files=16, compact=False)
            for name in os.listdir(moved):  # back, with new mtimes: re-indexed by `index`
                shutil.move(moved / name, self.repo / f"pkg{int(name[1:5]) % 7}" / name)
            last = sorted((store / "segments").glob("*.seg"))[-1]
            with open(last, "ab") as f:
                f.write(os.urandom(3000))  # a batch that never committed
        self.templates[state] = store
        return store

    def fresh(self, op: str, name: str) -> Path:
        store = self.work / name
        shutil.rmtree(store, ignore_errors=True)
        if op != "index":
            shutil.copytree(self.template("indexed" if op == "freeze" else "garbage"), store)
        return store

    def committed_before(self, op: str, store: Path) -> set[str]:
        """What a freeze or gc starts from: every file the store already holds."""
        if op == "index" or not (store / "catalog.sqlite").exists():
            return set()
        return self._stored(store)

    def finish(self, op: str, store: Path, committed: set[str], what: str) -> None:
        """Check after the trial, re-run the writer to completion, check again."""
        self.trials.bad("failed_open", 0, what)
        check(store, self.files, committed, self.trials, what)
        code, again, out = run_child(op, store, self.repo)
        if code != 0:
            self.trials.bad("failed_verify", 1, f"{what}: re-run failed: {out[-300:]}")
            return
        full = {p for p in self.files if Path(p).suffix in (".py", ".js", ".c", ".go", ".rs")}
        check(store, self.files, full if op == "index" else committed, self.trials,
              f"{what}, re-run")  # fmt: skip

    # the kinds of trial
    def kill_points(self, repeats: int) -> dict:
        out = {}
        for point in faults.POINTS:
            op = op_for(point)
            runs = landed = reached = 0  # `reached`: the last passage a kill landed at
            for n in range(1, repeats + 1):
                # the n-th passage, or, for a point passed fewer times in one run, again at
                # an earlier one (a later trial of the same kind, not a trial that missed)
                for k in dict.fromkeys((n, (n - 1) % max(reached, 1) + 1)):
                    store = self.fresh(op, "kill")
                    before = self.committed_before(op, store)
                    code, committed, _ = run_child(op, store, self.repo, fault=f"{point}:{k}")
                    runs += 1
                    if code == -signal.SIGKILL:
                        landed += 1
                        reached = max(reached, k)
                    self.finish(op, store, before | committed, f"kill at {point}:{k}")
                    if code == -signal.SIGKILL:
                        break
            out[point] = {"trials": runs, "landed": landed, "passages": reached}
        return out

    def random_kills(self, trials: int) -> int:
        durations = {}
        for op in OPS:
            store = self.fresh(op, "timing")
            t0 = time.perf_counter()
            run_child(op, store, self.repo)
            durations[op] = time.perf_counter() - t0 - 0.15  # minus the child's imports
        for k in range(trials):
            op = OPS[k % len(OPS)]
            store = self.fresh(op, "random")
            before = self.committed_before(op, store)
            after = self.rng.uniform(0.0, max(durations[op], 0.05))
            code, committed, _ = run_child(op, store, self.repo, kill_after=after)
            self.finish(op, store, before | committed, f"random kill of {op} at {after:.3f} s")
        return trials

    def writer_pairs(self) -> int:
        runs = 0
        for (a, b), wait in itertools.product(itertools.product(OPS, OPS), (0.0, 60.0)):
            store = self.fresh("freeze", "pair")  # an indexed store: every op has work
            before = self.committed_before("freeze", store)
            env = {**os.environ}
            env.pop(faults.ENV, None)
            kids = [subprocess.Popen([sys.executable, "-c", CHILD, op, str(store), str(self.repo),
                                      str(wait)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env) for op in (a, b)]  # fmt: skip
            results = [(k.wait(timeout=600), k.communicate()) for k in kids]
            codes = [c for c, _ in results]
            what = f"writers {a} + {b}, wait {wait:g}"
            if wait:  # the second waits for the first: both finish
                self.trials.bad("failed_verify", sum(c != 0 for c in codes), what)
            else:  # each finishes or refuses cleanly, naming the holder
                for c, (out, err) in results:
                    clean = c == 0 or (c == 3 and "being written by pid" in out)
                    self.trials.bad("failed_verify", int(not clean), f"{what}: {err[-300:]}")
            committed = before | {line[2:] for _, (out, _) in results for line in out.splitlines()
                                  if line.startswith("C ")}  # fmt: skip
            check(store, self.files, committed, self.trials, what)
            runs += 1
        return runs

    def byte_flips(self, flips: int) -> int:
        """Random bytes flipped (one at a time, undone after) in a frozen store's segments,
        catalog and path index; a reader in a child process checks every file each time."""
        from .. import indexer
        from ..freeze import freeze

        store = self.work / "flips"
        shutil.rmtree(store, ignore_errors=True)
        indexer.index(self.repo, store, jobs=1)
        freeze(store, jobs=1)
        targets = {"segments": [p.relative_to(store).as_posix()
                                for p in sorted((store / "segments").glob("*.seg"))],
                   "catalog": ["catalog.sqlite"], "path index": ["paths.idx"]}  # fmt: skip
        plan = []
        for k in range(flips):
            rel = self.rng.choice(targets[list(targets)[k % 3]])
            size = (store / rel).stat().st_size
            plan.append((rel, self.rng.randrange(size), self.rng.randrange(1, 256), k % 6 == 1))
        from ..store import Store

        with Store.open(store) as s:
            symbols = {name: s.files_with_symbol(name) for name in ("f3_1", "F4x2", "f10_0")}
        stored = {p: v for p, v in self.files.items() if p in self._stored(store)}
        from .. import languages, parse

        sexps = {p: str(parse(v, languages.detect(p)).root_node) for p, v in stored.items()}
        done = 0
        while done < len(plan):
            child = subprocess.Popen([sys.executable, "-c", FLIPPER, str(store)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
            body = {"originals": {p: v.hex() for p, v in stored.items()},
                    "flips": plan[done:], "symbols": symbols, "sexps": sexps}  # fmt: skip
            out, err = child.communicate(json.dumps(body), timeout=3600)
            ended = 0
            for line in out.splitlines():
                if line.startswith("END "):
                    _, k, outcome = line.split(" ", 2)
                    result = json.loads(outcome)
                    self.trials.bad("silent_wrong", result["wrong"],
                                    f"flip {plan[done + int(k)]}: {result['details']}")
                    self.unclean += result["unclean"]
                    ended = int(k) + 1
            if child.returncode != 0:  # died inside a flip: a reader crash; undo it here
                rel, offset, xor, hide = plan[done + ended]
                self.trials.bad("reader_crashes", 1, f"flip {plan[done + ended]}: "
                                f"exit {child.returncode} {err[-300:]}")  # fmt: skip
                with open(store / rel, "r+b") as f:
                    f.seek(offset)
                    old = f.read(1)
                    f.seek(offset)
                    f.write(bytes([old[0] ^ xor]))
                if hide and (store / "paths.hid").exists():
                    os.rename(store / "paths.hid", store / "paths.idx")
                ended += 1
            done += ended
        return flips

    @staticmethod
    def _stored(store: Path) -> set[str]:
        from ..store import Store

        with Store.open(store) as s:
            return {f.path for f in s.files()}

    def inplace_rewrites(self, trials: int) -> int:
        """Working files changed four ways under a reader process holding their trees."""
        from .. import indexer

        changes = ("truncate", "same size", "in place", "replace", "delete")
        count = 0
        for k in range(trials):
            repo = self.work / "rewrite-repo"
            shutil.rmtree(repo, ignore_errors=True)
            shutil.copytree(self.repo, repo)
            indexer.index(repo, jobs=1)
            paths = sorted(p for p in self._stored(repo / ".cstvault"))[:40]
            kept = {p: (repo / p).read_bytes() for p in paths}
            child = subprocess.Popen([sys.executable, "-c", HOLDER, str(repo / ".cstvault")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(paths) + "\n")
            child.stdin.write(json.dumps({p: v.hex() for p, v in kept.items()}) + "\n")
            child.stdin.flush()
            child.stdout.readline()  # HELD
            for j, p in enumerate(paths):
                _change(repo / p, changes[(j + k) % len(changes)], self.rng)
                count += 1
            out, err = child.communicate("go\n", timeout=600)
            if child.returncode != 0:
                self.trials.bad("reader_crashes", 1, f"rewrites: exit {child.returncode} "
                                f"{err[-300:]}")  # fmt: skip
                continue
            wrong = int(out.split("WRONG", 1)[1].split()[0])
            self.trials.bad("silent_wrong", wrong, "rewrites under a reader")
        return count


CLEAN_ERRORS = ("CorruptRecord", "KeyError", "DatabaseError", "IncompleteStore",
                "StoreVersionError", "FileNotFoundError")  # fmt: skip


def read_all(store_dir: str, originals: dict[str, bytes], symbols: dict[str, list[str]],
             sexps: dict[str, str]) -> dict:  # fmt: skip
    """Every answer a reader gets from a (damaged) store, against the truth: `wrong`
    counts answers that differ without an error; errors are detection, `unclean` those
    not of a kind the store documents."""
    from ..store import Store

    wrong, details, unclean = 0, [], []

    def error(exc: BaseException) -> None:
        if type(exc).__name__ not in CLEAN_ERRORS and len(unclean) < 5:
            unclean.append(repr(exc)[:160])

    try:
        store = Store.open(store_dir)
    except Exception as exc:  # noqa: BLE001 - detection, whatever its kind
        error(exc)
        return {"wrong": 0, "details": [], "unclean": unclean}
    with store:
        try:
            listed = {f.path for f in store.files()}
            if listed != set(originals):
                wrong += 1
                details.append(f"listing: {sorted(listed ^ set(originals))[:3]}")
        except Exception as exc:  # noqa: BLE001
            error(exc)
        for path, want in originals.items():
            try:
                tree = store.tree(path)
                text, source, sexp = tree.text, store.source(path), str(tree.root_node)
            except Exception as exc:  # noqa: BLE001
                error(exc)
                continue
            if text != want or source != want or sexp != sexps[path]:
                wrong += 1
                details.append(path)
        for name, paths in symbols.items():
            try:
                got = store.files_with_symbol(name)
            except Exception as exc:  # noqa: BLE001
                error(exc)
                continue
            if got != paths:
                wrong += 1
                details.append(f"symbol {name}: {got[:3]}")
    return {"wrong": wrong, "details": details[:5], "unclean": unclean}


def _change(path: Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(len(data) // 3)
    elif how == "same size":
        st = path.stat()
        k = rng.randrange(len(data))
        path.write_bytes(data[:k] + bytes([data[k] ^ 1]) + data[k + 1 :])
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif how == "in place":
        with open(path, "r+b") as f:
            f.write(bytes(reversed(data)) + b"\n// longer\n")
    elif how == "replace":
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(b"// replaced\n")
        os.replace(tmp, path)
    else:
        path.unlink()


def run(work: Path, *, files: int = 240, repeats: int = 3, random_kills: int = 200,
        flips: int = 1000, rewrites: int = 10, seed: int = 1) -> dict:  # fmt: skip
    """All trials; a JSON-ready dict of the figures."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench = Bench(work, files, seed)
    points = bench.kill_points(repeats)
    out = {
        "files": files,
        "kill_points": points,
        "kill_trials": sum(p["trials"] for p in points.values()),
        "kills_landed": sum(p["landed"] for p in points.values()),
        "random_kill_trials": bench.random_kills(random_kills),
        "writer_pairs": bench.writer_pairs(),
        "byte_flips": bench.byte_flips(flips),
        "inplace_rewrites": bench.inplace_rewrites(rewrites),
        **bench.trials.figures,
        "failures": bench.trials.failures,
        "undocumented_errors": bench.unclean[:50],
    }
    shutil.rmtree(work, ignore_errors=True)
    return out
