"""Pinned benchmark corpus: fetched from Debian, PyPI and npm, checksum-verified, cached
outside the repository, cut to per-language line quotas deterministically."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import languages

DEFAULT_DIR = Path(os.environ.get("CSTVAULT_CACHE", Path.home() / ".cache" / "cstvault"))


@dataclass(frozen=True)
class Source:
    name: str
    registry: str  # deb | pypi | npm
    package: str
    version: str
    filename: str
    sha256: str
    language: str
    inner: str = ""  # a tarball or zip inside the package holding the code
    prefixes: tuple[str, ...] = ()  # keep members under these paths (after inner/strip)


SOURCES: tuple[Source, ...] = (
    Source("django", "pypi", "django", "5.1.3", "Django-5.1.3-py3-none-any.whl",
           "8b38a9a12da3ae00cb0ba72da985ec4b14de6345046b1e174b1fd7254398f818", "python"),
    Source("sympy", "pypi", "sympy", "1.13.3", "sympy-1.13.3-py3-none-any.whl",
           "54612cf55a62755ee71824ce692986f23c88ffa77207b30c1368eda4a7060f73", "python"),
    Source("three", "npm", "three", "0.170.0", "three-0.170.0.tgz",
           "4a608a355dcaba72e0e5383cdc814303f5b6060b43c238cdf6932dceb699238d", "javascript"),
    Source("typescript", "npm", "typescript", "5.6.3", "typescript-5.6.3.tgz",
           "ef67f8d8ad895858024b7339d3e34bf112cae3c5db1f538c3079038b17ae30fa", "javascript"),
    Source("typescript-dts", "npm", "typescript", "5.6.3", "typescript-5.6.3.tgz",
           "ef67f8d8ad895858024b7339d3e34bf112cae3c5db1f538c3079038b17ae30fa", "typescript"),
    Source("aws-sdk-ec2", "npm", "@aws-sdk/client-ec2", "3.692.0",
           "aws-sdk-client-ec2-3.692.0.tgz",
           "c60f1934a1644d626a2a2ad409a7174acb53a344c686ded75586190a29d93909", "typescript"),
    Source("aws-sdk-ec2-js", "npm", "@aws-sdk/client-ec2", "3.692.0",
           "aws-sdk-client-ec2-3.692.0.tgz",
           "c60f1934a1644d626a2a2ad409a7174acb53a344c686ded75586190a29d93909", "javascript"),
    Source("types-node", "npm", "@types/node", "22.9.0", "types-node-22.9.0.tgz",
           "8c502db09acce005d8ed708c3be1bd4bf50255aab4ec47bcc38321c453ac01e4", "typescript"),
    Source("rxjs", "npm", "rxjs", "7.8.1", "rxjs-7.8.1.tgz",
           "c532167725ab7d085123209156c93cef22f2479cb9c8527060f1cd903aa9d149", "typescript"),
    Source("rust-src", "deb", "rust-src", "1.63.0+dfsg1-2", "rust-src_1.63.0+dfsg1-2_all.deb",
           "410b8c6d464cabbe5fb3154ab8c3d374980dd597fbe7e3b7bb3ed8dd1bf11e25", "rust"),
    Source("go-src", "deb", "golang-1.19-src", "1.19.8-2", "golang-1.19-src_1.19.8-2_all.deb",
           "2dfa82fe4f08f4e0193c532e561af4c91871f5235608f04f2bb8d57bb288df5a", "go"),
    Source("openjdk-17", "deb", "openjdk-17-source", "17.0.21.1+2-1~deb12u1",
           "openjdk-17-source_17.0.21.1+2-1~deb12u1_all.deb",
           "5106aa3881e3b49568823ebdfc3755d4043f6f53bbfc996d0efee03172dc0a9b", "java",
           inner="usr/lib/jvm/openjdk-17/lib/src.zip"),
    Source("linux-6.1", "deb", "linux-source-6.1", "6.1.192-2",
           "linux-source-6.1_6.1.192-2_all.deb",
           "ae95fe63d4c553f8d0e6c86cb1ab566f3894a43743eb19ab585cd97d82f26514", "c",
           inner="usr/src/linux-source-6.1.tar.xz",
           prefixes=tuple(f"linux-source-6.1/{p}/" for p in (
               "kernel", "mm", "fs", "net", "lib", "block", "crypto", "security", "ipc",
               "init", "drivers/net", "drivers/gpu/drm/i915"))),
    Source("boost", "deb", "libboost1.74-dev", "1.74.0+ds1-21",
           "libboost1.74-dev_1.74.0+ds1-21_amd64.deb",
           "ba14fe04d7f138f874bd3ab3a20c4fd1e9f654e271449b8f3e48d20f942dbb93", "cpp"),
)  # fmt: skip

# Lines per language in the default (full) corpus: 8.5M in all.
QUOTAS: dict[str, int] = {
    "python": 850_000,
    "javascript": 800_000,
    "typescript": 350_000,
    "rust": 1_000_000,
    "go": 1_500_000,
    "java": 1_500_000,
    "c": 1_500_000,
    "cpp": 1_000_000,
}


class CorpusError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(src: Source, downloads: Path) -> Path:
    """Download one pinned package into the cache (unless present) and check its sha256."""
    downloads.mkdir(parents=True, exist_ok=True)
    target = downloads / src.filename
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=downloads) as tmp:
            if src.registry == "deb":
                cmd = ["apt-get", "download", f"{src.package}={src.version}"]
            elif src.registry == "pypi":
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                       f"{src.package}=={src.version}"]  # fmt: skip
            else:
                cmd = ["npm", "pack", f"{src.package}@{src.version}", "--silent"]
            res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            got = Path(tmp) / src.filename
            if res.returncode != 0 or not got.exists():
                hint = " (run 'apt-get update' first?)" if src.registry == "deb" else ""
                raise CorpusError(
                    f"could not fetch {src.package} {src.version} from {src.registry}{hint}: "
                    f"{(res.stderr or res.stdout).strip()[-400:]}"
                )
            shutil.move(got, target)
    digest = sha256(target)
    if digest != src.sha256:
        raise CorpusError(f"{target.name}: sha256 {digest} != pinned {src.sha256}")
    return target


def _members(src: Source, package: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(path, reader) for every regular file of a package, in archive order."""
    if src.registry == "pypi":
        with zipfile.ZipFile(package) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: z.read(info)
        return
    if src.registry == "npm":
        with tarfile.open(package, "r:gz") as t:
            for m in t:
                if m.isfile():
                    yield m.name, lambda m=m: t.extractfile(m).read()  # type: ignore[union-attr]
        return
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(package)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as t:
        for m in t:
            if not m.isfile():
                continue
            name = m.name.removeprefix("./")
            data = t.extractfile(m)
            assert data is not None
            if src.inner:
                if name == src.inner:
                    yield from _inner(io.BytesIO(data.read()), src.inner)
                continue
            yield name, data.read
    proc.wait()


def _inner(blob: io.BytesIO, name: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
    if name.endswith(".zip"):
        with zipfile.ZipFile(blob) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: z.read(info)
        return
    with tarfile.open(fileobj=blob, mode="r|*") as t:
        for m in t:
            if m.isfile():
                data = t.extractfile(m)
                assert data is not None
                yield m.name, data.read


def _wanted(src: Source, name: str) -> bool:
    if src.prefixes and not name.startswith(src.prefixes):
        return False
    if name.endswith((".min.js", ".min.mjs")):
        return False
    lang = languages.detect(name)
    if src.language == "typescript":
        return lang == "typescript"
    return lang == src.language


def build(directory: Path, lines: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Fetch, verify and lay out the corpus under `directory`; returns the manifest."""
    directory = directory.resolve()
    downloads = directory / "downloads"
    scale = 1.0 if lines is None else lines / sum(QUOTAS.values())
    quotas = {lang: max(1, int(q * scale)) for lang, q in QUOTAS.items()}
    tree = directory / ("corpus" if lines is None else f"corpus-{lines}")
    if tree.exists():
        shutil.rmtree(tree)
    candidates: dict[str, list[tuple[str, str, bytes]]] = {lang: [] for lang in QUOTAS}
    sources_out = []
    for src in SOURCES:
        package = fetch(src, downloads)
        log(f"verified {src.filename}")
        sources_out.append({"name": src.name, "registry": src.registry, "package": src.package,
                            "version": src.version, "sha256": src.sha256})  # fmt: skip
        have = sum(x[2].count(b"\n") for x in candidates[src.language])
        if have >= quotas[src.language] * 2:
            continue  # plenty already; later sources of this language are not needed
        for name, read in _members(src, package):
            if _wanted(src, name):
                candidates[src.language].append((src.name, name, read()))
    manifest: dict = {"sources": sources_out, "quotas": quotas, "languages": {}, "files": []}
    total_files = total_lines = total_bytes = 0
    for lang, items in candidates.items():
        items.sort(key=lambda x: (x[0], x[1]))
        got = files = nbytes = 0
        for src_name, name, data in items:
            if got >= quotas[lang]:
                break
            rel = Path(lang) / src_name / name
            out = tree / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            n = data.count(b"\n")
            got += n
            files += 1
            nbytes += len(data)
            manifest["files"].append({"path": rel.as_posix(), "lines": n, "bytes": len(data)})
        if got < quotas[lang]:
            raise CorpusError(f"{lang}: only {got} lines available, quota {quotas[lang]}")
        manifest["languages"][lang] = {"files": files, "lines": got, "bytes": nbytes}
        total_files += files
        total_lines += got
        total_bytes += nbytes
    manifest["total"] = {"files": total_files, "lines": total_lines, "bytes": total_bytes}
    manifest["path"] = str(tree)
    (tree / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
