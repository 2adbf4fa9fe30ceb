/* cstvault._native: the module (its functions and types, one file per concern: extract.c,
 * codec.c, tree.c, node.c, cursor.c, pathindex.c, query.c; native.h is what they share). */
#include "native.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

static PyObject *runtime_version(PyObject *self, PyObject *args) {
    return PyLong_FromLong(TREE_SITTER_LANGUAGE_VERSION);
}

/* glibc's malloc_trim(0): free heap pages back to the OS; False where there is no glibc. */
static PyObject *release_free_memory(PyObject *self, PyObject *args) {
#ifdef __GLIBC__
    Py_BEGIN_ALLOW_THREADS
    malloc_trim(0);
    Py_END_ALLOW_THREADS
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

/* The distinct byte strings source[start[i]:end[i]] with 0 < length <= max_len, as a set. */
static PyObject *distinct_slices(PyObject *self, PyObject *args) {
    Py_buffer src, st, en;
    Py_ssize_t max_len;
    if (!PyArg_ParseTuple(args, "y*y*y*n", &src, &st, &en, &max_len)) return NULL;
    PyObject *out = NULL;
    if (st.len != en.len || st.len % 8) {
        PyErr_SetString(PyExc_ValueError, "starts and ends must be int64 buffers of one length");
        goto done;
    }
    out = PySet_New(NULL);
    if (!out) goto done;
    const int64_t *s = st.buf, *e = en.buf;
    const char *text = src.buf;
    for (Py_ssize_t i = 0, n = st.len / 8; i < n; i++) {
        if (s[i] < 0 || e[i] > src.len || e[i] <= s[i] || e[i] - s[i] > max_len) continue;
        PyObject *b = PyBytes_FromStringAndSize(text + s[i], (Py_ssize_t)(e[i] - s[i]));
        if (!b || PySet_Add(out, b) < 0) { Py_XDECREF(b); Py_CLEAR(out); goto done; }
        Py_DECREF(b);
    }
done:
    PyBuffer_Release(&src);
    PyBuffer_Release(&st);
    PyBuffer_Release(&en);
    return out;
}

static PyMethodDef methods[] = {
    {"open_tree", open_tree, METH_VARARGS,
     "open_tree(cls, record, grammars) -> (tree, source_len, source_crc, nbytes) or None"},
    {"path_hashes", path_hashes, METH_O, "path_hashes(paths) -> uint64 FNV-1a of each UTF-8 path"},
    {"find_path", find_path, METH_VARARGS,
     "find_path(index, counter, path, blob_cls, languages, fd) -> (BlobRow, (size, mtime)), "
     "None (not stored) or False (ask the catalog)"},
    {"distinct_slices", distinct_slices, METH_VARARGS,
     "distinct_slices(source, starts int64, ends int64, max_len) -> set of bytes"},
    {"parse_extract", parse_extract, METH_VARARGS,
     "parse_extract(source, language_capsule, query=None) -> (n, kind, grammar, flags, field, "
     "size, "
     "start, end, unexpected, sexp_or_None)"},
    {"release_free_memory", release_free_memory, METH_NOARGS,
     "release_free_memory() -> bool: glibc malloc_trim(0), False without glibc"},
    {"language_abi", runtime_version, METH_NOARGS, "Newest grammar ABI the runtime reads."},
    {"line_starts", line_starts, METH_O, "line_starts(source) -> int64 line start offsets"},
    {"points", points, METH_VARARGS, "points(source, offsets) -> [(row, column)]"},
    {"definition_rows", definition_rows, METH_VARARGS,
     "definition_rows(data, n, at) -> [(kind, start, end, name_start, name_end)] (tags.py)"},
    {"encode_body", encode_body, METH_VARARGS, "Encode columns as a record body."},
    {"decode_body", decode_body, METH_VARARGS, "Decode a record body (see bytecode.decode)."},
    {"structure", py_structure, METH_VARARGS,
     "structure(size int64 buffer) -> (parent, prev, child_count, depth) int32 bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m || PyModule_AddFunctions(m, query_methods) < 0 ||
        PyModule_AddFunctions(m, colquery_methods) < 0 ||
        PyModule_AddFunctions(m, live_methods) < 0 ||
        PyModule_AddFunctions(m, stable_methods) < 0 ||
        PyModule_AddFunctions(m, crc_methods) < 0)
        return NULL;
    /* the raw (thread-safe) allocator: parse_extract parses and walks without the GIL, so
     * indexing threads parse in parallel (pymalloc was ~4% faster but needs the GIL) */
    ts_set_allocator(PyMem_RawMalloc, PyMem_RawCalloc, PyMem_RawRealloc, PyMem_RawFree);
    Corrupt = PyErr_NewException("cstvault._native.CorruptRecord", PyExc_ValueError, NULL);
    if (!Corrupt || PyModule_AddObjectRef(m, "CorruptRecord", Corrupt) < 0) return NULL;
    if (PyType_Ready(&TreeBaseType) < 0 || PyType_Ready(&NodeBaseType) < 0 ||
        PyType_Ready(&CursorType) < 0 || PyType_Ready(&CaptureType) < 0)
        return NULL;
    if (PyModule_AddObjectRef(m, "TreeBase", (PyObject *)&TreeBaseType) < 0 ||
        PyModule_AddObjectRef(m, "NodeBase", (PyObject *)&NodeBaseType) < 0 ||
        PyModule_AddObjectRef(m, "TreeCursor", (PyObject *)&CursorType) < 0 ||
        PyModule_AddObjectRef(m, "Capture", (PyObject *)&CaptureType) < 0)
        return NULL;
    EncodeErr = PyErr_NewException("cstvault._native.EncodeError", PyExc_ValueError, NULL);
    if (!EncodeErr || PyModule_AddObjectRef(m, "EncodeError", EncodeErr) < 0) return NULL;
    return m;
}
