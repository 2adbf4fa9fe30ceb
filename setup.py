"""Build cstvault._native: our tree walker compiled with tree-sitter's C runtime.

The runtime is the one py-tree-sitter wraps, taken from the pinned tree-sitter sdist on the
package index at build time (checked by sha256, cached outside the repository); no
third-party code is kept in this repository.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

TS_VERSION = "0.26.1"
TS_SDIST = f"tree_sitter-{TS_VERSION}.tar.gz"
TS_SHA256 = "9919cbaf02d17fa9a4cd0e6da496aecf901b758e6eacf122eee393e3ef08aacd"
CACHE = Path(os.environ.get("CSTVAULT_CACHE", Path.home() / ".cache" / "cstvault")) / "build"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_sitter_sources() -> Path:
    """Directory holding tree-sitter's lib/ (src + include), fetched once."""
    root = CACHE / f"tree_sitter-{TS_VERSION}"
    lib = root / "tree_sitter" / "core" / "lib"
    if (lib / "src" / "lib.c").exists():
        return lib
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / TS_SDIST
    if not sdist.exists() or _sha256(sdist) != TS_SHA256:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             "--no-build-isolation", "-q", "-d", str(CACHE), f"tree-sitter=={TS_VERSION}"],
            check=True,
        )  # fmt: skip
    digest = _sha256(sdist)
    if digest != TS_SHA256:
        raise RuntimeError(f"{sdist}: sha256 {digest} != pinned {TS_SHA256}")
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers() if "/tree_sitter/core/lib/" in m.name]
        t.extractall(CACHE, members=members, filter="data")
    return lib


class BuildNative(build_ext):
    def build_extensions(self) -> None:
        lib = tree_sitter_sources()
        for ext in self.extensions:
            ext.sources.append(str(lib / "src" / "lib.c"))
            ext.include_dirs += [str(lib / "include"), str(lib / "src")]
            ext.extra_compile_args += ["-std=c11", "-fvisibility=hidden"]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "cstvault._native",
            sources=sorted(str(p) for p in Path("src/cstvault/binding").glob("*.c")),
            depends=["src/cstvault/binding/native.h"],
            define_macros=[("_POSIX_C_SOURCE", "200112L"), ("_DEFAULT_SOURCE", None)],
        )
    ],
    cmdclass={"build_ext": BuildNative},
)
