/* Structural subtree hashes for stable node ids (stable.py): one pass over the columns. */
#include "native.h"

#define HB 0x100000001B3ULL
#define MIX 0x9E3779B97F4A7C15ULL

static uint64_t text_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0xCBF29CE484222325ULL; /* FNV-1a */
    for (size_t k = 0; k < n; k++) { h ^= p[k]; h *= HB; }
    return h;
}

/* subtree_hashes(kind u16, field u16, flags u8, size i64, start u32, end u32, source) -> bytes
 * of one u64 per node: its kind, field, shape and leaf texts, children in order. */
static PyObject *subtree_hashes(PyObject *self, PyObject *args) {
    Py_buffer b[7];
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &b[6]))
        return NULL;
    Py_ssize_t n = b[0].len / 2;
    PyObject *out = NULL;
    if (b[1].len != 2 * n || b[2].len != n || b[3].len != 8 * n || b[4].len != 4 * n ||
        b[5].len != 4 * n) {
        PyErr_SetString(PyExc_ValueError, "subtree_hashes: columns of different lengths");
        goto done;
    }
    const uint16_t *kind = b[0].buf, *field = b[1].buf;
    const uint8_t *flags = b[2].buf, *src = b[6].buf;
    const int64_t *size = b[3].buf;
    const uint32_t *start = b[4].buf, *end = b[5].buf;
    uint64_t *h;
    out = new_bytes(n * 8, (void **)&h);
    if (!out) goto done;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        uint64_t t = ((uint64_t)kind[i] * MIX) ^ ((uint64_t)field[i] << 20) ^ ((uint64_t)size[i] << 40);
        if (!(flags[i] & HAS_CHILDREN)) {
            uint32_t s = start[i], e = end[i];
            if (e > s && (Py_ssize_t)e <= b[6].len) t ^= text_hash(src + s, e - s) * 31;
        } else {
            Py_ssize_t stop = i + size[i];
            if (stop > n) stop = n;
            for (Py_ssize_t c = i + 1; c < stop; c += size[c] > 0 ? size[c] : 1) t = t * HB + h[c];
        }
        h[i] = t * MIX + 1;
    }
done:
    for (int k = 0; k < 7; k++)
        if (b[k].obj) PyBuffer_Release(&b[k]);
    return out;
}

typedef struct { uint64_t h; int64_t i; } HashAt;

static int by_hash(const void *a, const void *b) {
    const HashAt *x = a, *y = b;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static const int64_t *sizes_of_roots; /* qsort context: subtree sizes (largest first) */
static int by_size_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    int64_t sx = sizes_of_roots[x], sy = sizes_of_roots[y];
    if (sx != sy) return sx > sy ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* first index in sorted `s` (length m) whose hash is >= h */
static Py_ssize_t lower(const HashAt *s, Py_ssize_t m, uint64_t h) {
    Py_ssize_t lo = 0, hi = m;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (s[mid].h < h) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* match_top(new hashes u64, new sizes i64, new parents i64, old hashes u64, old sizes i64)
 * -> i64 bytes: for each new node the old node of an identical subtree, else -1. Largest
 * subtrees first, each to the unused identical old subtree nearest its scaled position. */
static PyObject *match_top(PyObject *self, PyObject *args) {
    Py_buffer b[5];
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*", &b[0], &b[1], &b[2], &b[3], &b[4])) return NULL;
    Py_ssize_t n = b[0].len / 8, m = b[3].len / 8;
    PyObject *out = NULL;
    HashAt *sorted = NULL;
    int64_t *roots = NULL;
    uint8_t *used = NULL, *present = NULL;
    if (b[1].len != 8 * n || b[2].len != 8 * n || b[4].len != 8 * m) {
        PyErr_SetString(PyExc_ValueError, "match_top: arrays of different lengths");
        goto done;
    }
    const uint64_t *hn = b[0].buf, *ho = b[3].buf;
    const int64_t *sn = b[1].buf, *pn = b[2].buf, *so = b[4].buf;
    int64_t *res;
    out = new_bytes(n * 8, (void **)&res);
    sorted = PyMem_Malloc((m ? m : 1) * sizeof *sorted);
    roots = PyMem_Malloc((n ? n : 1) * sizeof *roots);
    used = PyMem_Calloc(m ? m : 1, 1);
    present = PyMem_Calloc(n ? n : 1, 1);
    if (!out || !sorted || !roots || !used || !present) { Py_CLEAR(out); PyErr_NoMemory(); goto done; }
    for (Py_ssize_t k = 0; k < n; k++) res[k] = -1;
    for (Py_ssize_t k = 0; k < m; k++) { sorted[k].h = ho[k]; sorted[k].i = k; }
    qsort(sorted, m, sizeof *sorted, by_hash);
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t at = lower(sorted, m, hn[k]);
        present[k] = at < m && sorted[at].h == hn[k];
    }
    Py_ssize_t nr = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        if (present[k] && !(pn[k] >= 0 && pn[k] < n && present[pn[k]])) roots[nr++] = k;
    sizes_of_roots = sn;
    qsort(roots, nr, sizeof *roots, by_size_desc);
    double scale = n ? (double)m / (double)n : 1.0;
    for (Py_ssize_t r = 0; r < nr; r++) {
        int64_t i = roots[r], size = sn[i];
        if (res[i] >= 0 || size < 1 || i + size > n) continue;
        double want = (double)i * scale;
        int64_t pick = -1;
        double best = 0;
        for (Py_ssize_t at = lower(sorted, m, hn[i]); at < m && sorted[at].h == hn[i]; at++) {
            int64_t c = sorted[at].i;
            if (used[c] || so[c] != size || c + size > m) continue;
            double d = (double)c > want ? (double)c - want : want - (double)c;
            if (pick < 0 || d < best) { pick = c; best = d; }
        }
        if (pick < 0) continue;
        int clash = 0;
        for (int64_t k = 0; k < size && !clash; k++) clash = res[i + k] >= 0 || used[pick + k];
        if (clash) continue;
        for (int64_t k = 0; k < size; k++) { res[i + k] = pick + k; used[pick + k] = 1; }
    }
done:
    PyMem_Free(sorted); PyMem_Free(roots); PyMem_Free(used); PyMem_Free(present);
    for (int k = 0; k < 5; k++)
        if (b[k].obj) PyBuffer_Release(&b[k]);
    return out;
}

/* match_up(out i64 (updated in place), new sizes i64, old parents i64, new kinds u16, old kinds
 * u16, old used u8 (updated)): bottom-up, children before parents (reverse preorder), an
 * unmatched new node takes the old parent most of its matched children's partners have
 * (a majority vote), if that one is unused and of its kind. */
static PyObject *match_up(PyObject *self, PyObject *args) {
    Py_buffer b[6];
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "w*y*y*y*y*w*", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]))
        return NULL;
    Py_ssize_t n = b[0].len / 8, m = b[2].len / 8;
    PyObject *res = NULL;
    if (b[1].len != 8 * n || b[3].len != 2 * n || b[4].len != 2 * m || b[5].len != m) {
        PyErr_SetString(PyExc_ValueError, "match_up: arrays of different lengths");
        goto done;
    }
    int64_t *out = b[0].buf;
    const int64_t *sn = b[1].buf, *po = b[2].buf;
    const uint16_t *kn = b[3].buf, *ko = b[4].buf;
    uint8_t *used = b[5].buf;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        if (out[i] >= 0 || sn[i] <= 1) continue;
        /* the old parent of most matched children: Boyer-Moore's majority vote over the
         * children (one pass; where no parent has a majority, the vote's survivor) */
        int64_t best = -1, count = 0;
        Py_ssize_t stop = i + sn[i] > n ? n : i + sn[i];
        for (Py_ssize_t c = i + 1; c < stop; c += sn[c] > 0 ? sn[c] : 1) {
            if (out[c] < 0 || out[c] >= m || po[out[c]] < 0) continue;
            int64_t cand = po[out[c]];
            if (count == 0) { best = cand; count = 1; }
            else count += cand == best ? 1 : -1;
        }
        if (best >= 0 && !used[best] && ko[best] == kn[i]) {
            out[i] = best;
            used[best] = 1;
        }
    }
    res = Py_NewRef(Py_None);
done:
    for (int k = 0; k < 6; k++)
        if (b[k].obj) PyBuffer_Release(&b[k]);
    return res;
}

PyMethodDef stable_methods[] = {
    {"match_up", match_up, METH_VARARGS,
     "match_up(out, new_sizes, old_parents, new_kinds, old_kinds, used): bottom-up, in place"},
    {"match_top", match_top, METH_VARARGS,
     "match_top(new_hashes, new_sizes, new_parents, old_hashes, old_sizes) -> i64 bytes"},
    {"subtree_hashes", subtree_hashes, METH_VARARGS,
     "subtree_hashes(kind, field, flags, size i64, start, end, source) -> u64 bytes"},
    {NULL, NULL, 0, NULL},
};
