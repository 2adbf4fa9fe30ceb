/* cstvault._native, the path index (store/pathindex.py, docs/format.md). */
#include "native.h"

/* ---------------------------------------------------------------------------------------
 * Path index (store/pathindex.py, docs/format.md): sorted 64-bit FNV-1a hashes of paths
 * beside fixed-size entries, looked up without touching SQLite.
 * ------------------------------------------------------------------------------------- */

static uint64_t fnv1a(const char *p, Py_ssize_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (Py_ssize_t i = 0; i < n; i++) { h ^= (uint8_t)p[i]; h *= 0x100000001b3ULL; }
    return h;
}

/* A second, differently built 64-bit hash (multiply and xor-shift per 8-byte word, then a
 * splitmix64 finish): an entry keeps it instead of the path, so a lookup tells two paths
 * apart unless both 64-bit hashes collide. */
static uint64_t check_hash(const char *p, Py_ssize_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, (size_t)(n - i));
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27; h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/* path_hashes(list of str) -> bytes of n (FNV-1a, check hash) uint64 pairs of the UTF-8 paths */
PyObject *path_hashes(PyObject *self, PyObject *arg) {
    if (!PyList_Check(arg)) { PyErr_SetString(PyExc_TypeError, "a list of str"); return NULL; }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    void *out;
    PyObject *res = new_bytes(16 * n, &out);
    if (!res) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *u = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(arg, i), &len);
        if (!u) { Py_DECREF(res); return NULL; }
        uint64_t h[2] = {fnv1a(u, len), check_hash(u, len)};
        memcpy((uint8_t *)out + 16 * i, h, 16);
    }
    return res;
}

#define PX_HEAD 64
#define PX_ENTRY 76

/* An index entry (store/pathindex.py ENTRY) as (BlobRow, (size, mtime_ns)). */
static PyObject *entry_row(const uint8_t *e, PyObject *blob_cls, PyObject *languages) {
    uint16_t lang = le16(e + 60);
    if (lang >= PyList_GET_SIZE(languages)) Py_RETURN_FALSE; /* damaged: ask the catalog */
    PyTypeObject *tp = (PyTypeObject *)blob_cls;
    PyObject *row = tp->tp_alloc(tp, 9), *tree = PyTuple_New(4), *src = PyTuple_New(4);
    PyObject *stat = NULL, *out = NULL;
    if (!row || !tree || !src) goto fail;
    for (int k = 0; k < 4; k++) {
        PyObject *a = PyLong_FromUnsignedLong(le32(e + 24 + 4 * k));
        PyObject *b = PyLong_FromUnsignedLong(le32(e + 40 + 4 * k));
        if (!a || !b) { Py_XDECREF(a); Py_XDECREF(b); goto fail; }
        PyTuple_SET_ITEM(tree, k, a);
        PyTuple_SET_ITEM(src, k, b);
    }
    PyObject *items[9] = {
        PyLong_FromUnsignedLong(le32(e + 8)), Py_NewRef(PyList_GET_ITEM(languages, lang)),
        PyLong_FromUnsignedLong(le32(e + 64)), PyLong_FromUnsignedLong(le32(e + 68)),
        PyLong_FromUnsignedLong(le32(e + 72)), tree, src,
        PyLong_FromUnsignedLong(le16(e + 56)), PyLong_FromUnsignedLong(le16(e + 58))};
    tree = src = NULL;
    int ok = 1;
    for (int k = 0; k < 9; k++) { ok &= items[k] != NULL; PyTuple_SET_ITEM(row, k, items[k]); }
    if (!ok) goto fail;
    stat = Py_BuildValue("(kL)", (unsigned long)le32(e + 12), (long long)le64s(e + 16));
    if (stat) out = PyTuple_Pack(2, row, stat);
fail:
    Py_XDECREF(row); Py_XDECREF(tree); Py_XDECREF(src); Py_XDECREF(stat);
    return out;
}

/* find_path(index, counter, path, blob_cls, languages, fd) -> (BlobRow, (size, mtime_ns));
 * None: not stored; False: ask the catalog (the index is not current -- its stamp differs
 * from the counter --, is damaged, or `path` has no UTF-8 form). The binary search walks
 * the mapped hashes; the matching entry is read with pread from `fd`, the same file, so a
 * lookup leaves no entry page mapped in (76 bytes a file, read at random).
 * Header (little-endian): magic "CSTP", version u32, stamp u64, count u64, hashes offset
 * u64, entries offset u64, (unused u64), entry size u32. An entry starts with the path's
 * check hash (u64). */
PyObject *find_path(PyObject *self, PyObject *args) {
    Py_buffer ix, ct;
    PyObject *path, *blob_cls, *languages, *result = NULL;
    int fd;
    if (!PyArg_ParseTuple(args, "y*y*UO!O!i", &ix, &ct, &path, &PyType_Type, &blob_cls,
                          &PyList_Type, &languages, &fd))
        return NULL;
    const uint8_t *b = ix.buf;
    uint64_t stamp, count, hoff, eoff, counter;
    uint32_t esize;
    Py_ssize_t len;
    const char *u;
    if (!PyType_IsSubtype((PyTypeObject *)blob_cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "blob_cls must be a tuple type");
        goto done;
    }
    if (ct.len < 8 || ix.len < PX_HEAD || memcmp(b, "CSTP", 4)) goto stale;
    counter = __atomic_load_n((const uint64_t *)ct.buf, __ATOMIC_ACQUIRE);
    memcpy(&stamp, b + 8, 8);
    if (stamp != counter) goto stale;
    memcpy(&count, b + 16, 8); memcpy(&hoff, b + 24, 8); memcpy(&eoff, b + 32, 8);
    memcpy(&esize, b + 48, 4);
    uint64_t L = (uint64_t)ix.len;
    if (esize != PX_ENTRY || hoff > L || count > (L - hoff) / 8 || eoff > L ||
        count > (L - eoff) / esize)
        goto stale;
    u = PyUnicode_AsUTF8AndSize(path, &len);
    if (!u) { PyErr_Clear(); goto stale; }
    uint64_t h = fnv1a(u, len), c = check_hash(u, len);
    uint64_t lo = 0, hi = count;
    while (lo < hi) { /* first hash >= h */
        uint64_t mid = lo + (hi - lo) / 2, v;
        memcpy(&v, b + hoff + 8 * mid, 8);
        if (v < h) lo = mid + 1; else hi = mid;
    }
    for (uint64_t j = lo; j < count; j++) {
        uint64_t v, check;
        memcpy(&v, b + hoff + 8 * j, 8);
        if (v != h) break;
        uint8_t e[PX_ENTRY];
        if (pread(fd, e, PX_ENTRY, (off_t)(eoff + esize * j)) != PX_ENTRY) goto stale;
        memcpy(&check, e, 8);
        if (check == c) {
            result = entry_row(e, blob_cls, languages);
            goto done;
        }
    }
    result = Py_NewRef(Py_None);
    goto done;
stale:
    result = Py_NewRef(Py_False);
done:
    PyBuffer_Release(&ix);
    PyBuffer_Release(&ct);
    return result;
}
