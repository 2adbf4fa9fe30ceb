# ruff: noqa: E501
"""Source snippets the tests write themselves, per language, including broken ones."""

from __future__ import annotations

SNIPPETS: dict[str, dict[str, bytes]] = {
    "python": {
        "ok": b'import os\n\n\nclass A(B, metaclass=M):\n    """doc"""\n    x: int = 1\n\n'
        b"    @property\n    def f(self, *a, k=2, **kw) -> str:\n        if a and not k:\n"
        b"            return f'{self.x!r:>4}'\n        elif k:\n            pass\n"
        b"        return [i async for i in y if i] + {1: 2}[1]\n\n"
        b"lambda x: (yield x)\nmatch p:\n    case [1, *r]: print(r)\n",
        "error": b"def f(:\n    pass\nclass A:\n    x = [1, 2,\n",
        "missing": b"print((1 + 2)\nx = {'a': 1\n",
    },
    "javascript": {
        "ok": b"import x from 'y';\nexport default class A extends B {\n  #p = 1;\n"
        b"  static async *g(a = 1, ...r) { yield* r; }\n  get v() { return `t${this.#p}`; }\n}\n"
        b"const f = (a) => a?.b ?? /re+/g.test(a);\nlet o = { a, [b]: 2, ...c };\n"
        b"label: for (const k in o) { if (k) continue label; }\n<div a={1}>hi {x}</div>;\n",
        "error": b"function f( { return 1 }\nvar = ;\n",
        "missing": b"if (a { b() }\nlet x = [1, 2\n",
    },
    "typescript": {
        "ok": b"interface I<T extends object = {}> { readonly a?: T[]; m(x: number): void }\n"
        b"type U = keyof I<any> | `x${string}`;\nenum E { A = 1, B }\n"
        b"export abstract class C<T> implements I<T> {\n  constructor(private readonly p: T) { super(); }\n"
        b"  abstract m(x: number): void;\n}\nconst v = <T,>(x: T): x is T => x as unknown as T satisfies T;\n"
        b"declare module 'm' { export function f(): never; }\n",
        "error": b"class { m( : number) }\nlet x: = 3;\n",
        "missing": b"function f(a: number { return a }\n",
    },
    "tsx": {
        "ok": b"const A = ({ x }: { x: number }) => <div className=\"a\">{x}<B<number> y={1} /></div>;\n"
        b"export default function App(): JSX.Element { return <><A x={1} /></>; }\n",
        "error": b"const A = () => <div><span></div>;\n",
        "missing": b"const B = (x: number => x;\n",
    },
    "rust": {
        "ok": b"use std::{fmt, io::Read as R};\n#[derive(Debug)]\npub struct S<'a, T: ?Sized> { x: &'a T }\n"
        b"impl<T> fmt::Display for S<'_, T> where T: fmt::Display {\n"
        b"    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result { write!(f, \"{}\", self.x) }\n}\n"
        b"fn main() { let v: Vec<_> = (0..10).map(|i| i * 2).collect(); match v[..] { [a, ..] => a, _ => 0 }; }\n"
        b"macro_rules! m { ($e:expr) => { $e + 1 }; }\n",
        "error": b"fn f( { let x = ; }\n",
        "missing": b"fn g() { let x = 1 }\nstruct T { a: u8\n",
    },
    "go": {
        "ok": b"package main\n\nimport (\n\t\"fmt\"\n)\n\ntype S[T any] struct{ x T }\n\n"
        b"func (s *S[T]) Get() T { return s.x }\n\nfunc main() {\n\tch := make(chan int, 1)\n"
        b"\tgo func() { ch <- 1 }()\n\tselect {\n\tcase v := <-ch:\n\t\tfmt.Println(v)\n\tdefault:\n\t}\n"
        + "\tfor i, r := range \"h\u00e9\" {\n\t\t_ = i + int(r)\n\t}\n}\n".encode(),
        "error": b"package main\nfunc f( {\n\tx := \n}\n",
        "missing": b"package main\nfunc g() { if x { }\n",
    },
    "java": {
        "ok": b"package a.b;\nimport java.util.*;\n@Deprecated\npublic final class A<T extends Comparable<T>> "
        b"implements Runnable {\n  private static final int X = 0x1F;\n  record R(int a) {}\n"
        b"  public void run() { var l = new ArrayList<String>(); l.forEach(s -> System.out.println(s));\n"
        b"    switch (X) { case 1 -> {} default -> { throw new IllegalStateException(\"x\"); } }\n  }\n}\n",
        "error": b"class A { void f( { int = 1; } }\n",
        "missing": b"class B { int x = 1 }\n",
    },
    "c": {
        "ok": b"#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n"
        b"typedef struct node { int v; struct node *next; } node_t;\n"
        b"static int f(int n, char **argv) {\n  int a[3] = {1, [2] = 3};\n  for (int i = 0; i < n; i++)\n"
        b"    a[i % 3] += MAX(i, 2);\n#ifdef X\n  goto end;\n#endif\nend:\n  return sizeof(node_t) + *argv[0];\n}\n",
        "error": b"int f( { return ; \n",
        "missing": b"int main() { int x = 1 return x; }\n",
    },
    "cpp": {
        "ok": b"#include <vector>\nnamespace ns {\ntemplate <typename T, int N = 3>\n"
        b"class V : public std::vector<T> {\n public:\n  explicit V(T x) noexcept : std::vector<T>(N, x) {}\n"
        b"  auto operator[](size_t i) const -> const T& { return this->at(i); }\n};\n}  // namespace ns\n"
        b"int main() { auto l = [&](auto x) { return x * 2; }; ns::V<int> v{1};\n"
        b"  for (auto& e : v) e = l(e); co_return; }\n",
        "error": b"class A { void f( { } };\ntemplate <> x;\n",
        "missing": b"int f() { return 1 }\n",
    },
}

# Inputs that stress the format rather than a grammar.
EDGE_CASES: dict[str, bytes] = {
    "empty": b"",
    "comments_only": b"# one\n# two\n\n   # three",
    "unicode": "s = '\u00e9\u4e2d\u6587 \U0001f600'\n\u03c0 = 3.14  # \u00fc\n".encode(),
    "crlf": b"def f():\r\n    return 1\r\n\r\nx = f()\r\n",
    "bom": b"\xef\xbb\xbfimport os\nprint(os.sep)\n",
    "invalid_utf8": b"x = '\xff\xfe'\ny = 1\n",
    "no_trailing_newline": b"x = 1",
    "tabs_and_cr": b"if x:\r\tpass\r",
}

COMMENT_ONLY: dict[str, bytes] = {
    "python": b"# a\n# b\n",
    "javascript": b"// a\n/* b */\n",
    "typescript": b"// a\n/** b */\n",
    "tsx": b"// a\n",
    "rust": b"// a\n/// b\n/* c */\n",
    "go": b"// a\n/* b */\n",
    "java": b"// a\n/* b */\n",
    "c": b"// a\n/* b */\n",
    "cpp": b"// a\n/* b */\n",
}


def deep(language: str, depth: int) -> bytes:
    """A file nesting `depth` levels deep."""
    if language == "python":
        return b"x = " + b"[" * depth + b"]" * depth + b"\n"
    if language in ("javascript", "typescript", "tsx"):
        return b"x = " + b"[" * depth + b"]" * depth + b";\n"
    if language == "rust":
        return b"fn f() { let x = " + b"(" * depth + b"1" + b")" * depth + b"; }\n"
    if language == "go":
        return b"package p\nvar x = " + b"(" * depth + b"1" + b")" * depth + b"\n"
    if language == "java":
        return b"class A { int x = " + b"(" * depth + b"1" + b")" * depth + b"; }\n"
    return b"int x = " + b"(" * depth + b"1" + b")" * depth + b";\n"
