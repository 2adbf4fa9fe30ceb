/* CRC32C (Castagnoli): the SSE4.2 instruction where the CPU has it, a table otherwise;
 * and the catalog's row checks over many rows at once. */
#include "native.h"

static uint32_t table[8][256];
static int have_table = 0, have_hw = -1;

static void make_table(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78U : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++) table[t][n] = (table[t - 1][n] >> 8) ^ table[0][table[t - 1][n] & 0xFF];
    have_table = 1;
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n) {
    if (!have_table) make_table();
    while (n >= 8) { /* slicing by 8 */
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = table[7][v & 0xFF] ^ table[6][(v >> 8) & 0xFF] ^ table[5][(v >> 16) & 0xFF] ^
              table[4][(v >> 24) & 0xFF] ^ table[3][(v >> 32) & 0xFF] ^ table[2][(v >> 40) & 0xFF] ^
              table[1][(v >> 48) & 0xFF] ^ table[0][v >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
#define HW_POSSIBLE 1
#else
#define HW_POSSIBLE 0
#endif

uint32_t crc32c_update(uint32_t value, const void *data, size_t n) {
    uint32_t crc = ~value;
#if HW_POSSIBLE
    if (have_hw < 0) have_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    if (have_hw) return ~crc_hw(crc, data, n);
#else
    have_hw = 0;
#endif
    return ~crc_sw(crc, data, n);
}

/* crc32c(data, value=0) -> int, as the crc32c package's crc32c */
static PyObject *py_crc32c(PyObject *self, PyObject *args) {
    Py_buffer b;
    unsigned int value = 0;
    if (!PyArg_ParseTuple(args, "y*|I", &b, &value)) return NULL;
    uint32_t out;
    Py_BEGIN_ALLOW_THREADS
    out = crc32c_update(value, b.buf, (size_t)b.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(out);
}

/* crc32c_table(data, value=0) -> int: the table path, whatever the CPU (for tests) */
static PyObject *py_crc32c_table(PyObject *self, PyObject *args) {
    Py_buffer b;
    unsigned int value = 0;
    if (!PyArg_ParseTuple(args, "y*|I", &b, &value)) return NULL;
    uint32_t out = ~crc_sw(~(uint32_t)value, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(out);
}

/* crc32c_hardware() -> whether the SSE4.2 instruction is used */
static PyObject *py_crc32c_hw(PyObject *self, PyObject *unused) {
    crc32c_update(0, "", 0);
    return PyBool_FromLong(have_hw == 1);
}

/* checked_stats(rows) -> {path: (size, mtime_ns)} for rows (path, size, mtime, blob, check)
 * whose check is the CRC32C of the path's UTF-8 (surrogateescape) bytes then blob, size,
 * mtime as three little-endian i64, stored signed 32-bit (catalog.row_check); damaged rows
 * are left out. */
static PyObject *checked_stats(PyObject *self, PyObject *rows) {
    PyObject *it = PyObject_GetIter(rows), *row, *out = PyDict_New();
    if (!it || !out) { Py_XDECREF(it); Py_XDECREF(out); return NULL; }
    while ((row = PyIter_Next(it))) {
        PyObject *path = PyTuple_Check(row) && PyTuple_GET_SIZE(row) == 5 ? PyTuple_GET_ITEM(row, 0) : NULL;
        long long size, mtime, blob, check;
        PyObject *enc = NULL;
        int ok = path && PyUnicode_Check(path);
        if (ok) {
            size = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 1));
            mtime = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 2));
            blob = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 3));
            check = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 4));
            ok = !PyErr_Occurred();
            if (ok) enc = PyUnicode_AsEncodedString(path, "utf-8", "surrogateescape");
            ok = enc != NULL;
        }
        if (!ok) {
            Py_XDECREF(enc);
            Py_DECREF(row);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "checked_stats: bad row");
            goto fail;
        }
        int64_t tail[3] = {blob, size, mtime};
        uint32_t crc = crc32c_update(0, PyBytes_AS_STRING(enc), (size_t)PyBytes_GET_SIZE(enc));
        crc = crc32c_update(crc, tail, sizeof tail);
        Py_DECREF(enc);
        if ((int32_t)crc == (int32_t)check) {
            PyObject *v = Py_BuildValue("(LL)", size, mtime);
            if (!v || PyDict_SetItem(out, path, v) < 0) { Py_XDECREF(v); Py_DECREF(row); goto fail; }
            Py_DECREF(v);
        }
        Py_DECREF(row);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) { Py_DECREF(out); return NULL; }
    return out;
fail:
    Py_DECREF(it);
    Py_DECREF(out);
    return NULL;
}

/* leb128(values: u64 buffer) -> bytes: unsigned LEB128 of each value, concatenated */
static PyObject *leb128(PyObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    Py_ssize_t n = b.len / 8;
    const uint64_t *v = b.buf;
    uint8_t *out;
    PyObject *res = new_bytes(n * 10, (void **)&out);
    if (!res) { PyBuffer_Release(&b); return NULL; }
    Py_ssize_t at = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        uint64_t x = v[k];
        while (x >= 0x80) { out[at++] = (uint8_t)(x | 0x80); x >>= 7; }
        out[at++] = (uint8_t)x;
    }
    PyBuffer_Release(&b);
    if (_PyBytes_Resize(&res, at) < 0) return NULL;
    return res;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* merge_postings(streams) -> bytes: posting streams (ascending ids, LEB128 deltas from 0)
 * made one, every id once and ascending; CorruptRecord on a stream cut inside a value. */
static PyObject *merge_postings(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "merge_postings takes a sequence of bytes");
    if (!seq) return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq), total = 0, n = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < k; i++) {
        if (!PyBytes_Check(items[i])) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "merge_postings takes bytes");
            return NULL;
        }
        total += PyBytes_GET_SIZE(items[i]); /* at least a byte an id */
    }
    uint64_t *v = PyMem_Malloc((size_t)(total ? total : 1) * sizeof(uint64_t));
    if (!v) { Py_DECREF(seq); return PyErr_NoMemory(); }
    int ordered = 1;
    for (Py_ssize_t i = 0; i < k; i++) {
        const uint8_t *b = (const uint8_t *)PyBytes_AS_STRING(items[i]);
        Py_ssize_t len = PyBytes_GET_SIZE(items[i]), at = 0;
        uint64_t acc = 0;
        while (at < len) {
            uint64_t x = 0;
            int shift = 0;
            for (;;) {
                if (at == len || shift > 63) {
                    PyMem_Free(v);
                    Py_DECREF(seq);
                    PyErr_SetString(Corrupt, "posting stream cut inside a value");
                    return NULL;
                }
                uint8_t c = b[at++];
                x |= (uint64_t)(c & 0x7F) << shift;
                shift += 7;
                if (!(c & 0x80)) break;
            }
            acc += x;
            if (n && acc <= v[n - 1]) ordered = 0;
            v[n++] = acc;
        }
    }
    Py_DECREF(seq);
    if (!ordered) {
        qsort(v, (size_t)n, sizeof(uint64_t), cmp_u64);
        Py_ssize_t m = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            if (!m || v[i] != v[m - 1]) v[m++] = v[i];
        n = m;
    }
    uint8_t *out;
    PyObject *res = new_bytes(n * 10, (void **)&out);
    if (!res) { PyMem_Free(v); return NULL; }
    Py_ssize_t at = 0;
    uint64_t prev = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t x = v[i] - prev;
        prev = v[i];
        while (x >= 0x80) { out[at++] = (uint8_t)(x | 0x80); x >>= 7; }
        out[at++] = (uint8_t)x;
    }
    PyMem_Free(v);
    if (_PyBytes_Resize(&res, at) < 0) return NULL;
    return res;
}

PyMethodDef crc_methods[] = {
    {"leb128", leb128, METH_O, "leb128(u64 buffer) -> bytes: LEB128 of each value"},
    {"merge_postings", merge_postings, METH_O,
     "merge_postings(streams) -> bytes: LEB128-delta id streams merged, each id once"},
    {"crc32c", py_crc32c, METH_VARARGS, "crc32c(data, value=0) -> CRC32C (Castagnoli)"},
    {"crc32c_table", py_crc32c_table, METH_VARARGS, "crc32c by the table (tests)"},
    {"crc32c_hardware", py_crc32c_hw, METH_NOARGS, "Whether CRC32C uses the SSE4.2 instruction."},
    {"checked_stats", checked_stats, METH_O,
     "checked_stats(rows (path, size, mtime, blob, check)) -> {path: (size, mtime)}, rows checked"},
    {NULL, NULL, 0, NULL},
};
