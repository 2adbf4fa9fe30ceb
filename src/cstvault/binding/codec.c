/* cstvault._native, codec: record body <-> columns (docs/format.md), and the structure pass. */
#include "native.h"

/* ---------------------------------------------------------------------------------------
 * Record decoding (docs/format.md): one C pass per column, every read bounds-checked.
 * ------------------------------------------------------------------------------------- */


typedef struct {
    const uint8_t *p, *end;
} Reader;

static int read_varint(Reader *r, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        if (shift == 63 && (b & 0x7E)) return -1;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) { *out = v; return v > (uint64_t)INT64_MAX ? -1 : 0; }
    }
    return -1;
}

static inline int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

typedef struct {
    int32_t *parent, *prev, *child_count, *depth;
} Structure;

/* Parent / previous sibling / child count / depth from subtree sizes with one stack pass;
 * returns an error message when the sizes do not nest, else NULL. */
static const char *structure_of(const int64_t *size, int64_t n, Structure *st) {
    if (n <= 0 || size[0] != n) return "root size differs from the node count";
    int64_t *stack = malloc(sizeof(int64_t) * (size_t)n);
    int64_t *lastc = malloc(sizeof(int64_t) * (size_t)n);
    if (!stack || !lastc) { free(stack); free(lastc); return "out of memory"; }
    int64_t sp = 0;
    const char *err = NULL;
    for (int64_t i = 0; i < n; i++) {
        int64_t sz = size[i];
        if (sz < 1 || sz > n - i) { err = "subtree size out of range"; break; }
        while (sp && stack[sp - 1] + size[stack[sp - 1]] <= i) sp--;
        st->child_count[i] = 0;
        if (sp) {
            int64_t p = stack[sp - 1];
            if (i + sz > p + size[p]) { err = "subtree sizes do not nest"; break; }
            st->parent[i] = (int32_t)p;
            st->prev[i] = (int32_t)lastc[sp - 1];
            lastc[sp - 1] = i;
            st->child_count[p]++;
        } else if (i) {
            err = "more than one root"; break;
        } else {
            st->parent[i] = -1;
            st->prev[i] = -1;
        }
        st->depth[i] = (int32_t)sp;
        if (sz > 1) { stack[sp] = i; lastc[sp] = -1; sp++; }
    }
    free(stack);
    free(lastc);
    return err;
}

PyObject *Corrupt;

PyObject *corrupt(const char *msg) {
    PyErr_SetString(Corrupt, msg);
    return NULL;
}

PyObject *new_bytes(Py_ssize_t len, void **data) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, len);
    if (b) *data = PyBytes_AS_STRING(b);
    return b;
}

/* structure(size: int64 buffer) -> (parent, prev, child_count, depth) as int32 bytes */
PyObject *py_structure(PyObject *self, PyObject *args) {
    Py_buffer sz;
    if (!PyArg_ParseTuple(args, "y*", &sz)) return NULL;
    int64_t n = sz.len / 8;
    void *a, *b, *c, *d;
    PyObject *pa = new_bytes(4 * n, &a), *pb = new_bytes(4 * n, &b);
    PyObject *pc = new_bytes(4 * n, &c), *pd = new_bytes(4 * n, &d);
    PyObject *out = NULL;
    if (pa && pb && pc && pd) {
        Structure st = {a, b, c, d};
        const char *err = structure_of((const int64_t *)sz.buf, n, &st);
        if (err) corrupt(err);
        else out = PyTuple_Pack(4, pa, pb, pc, pd);
    }
    Py_XDECREF(pa); Py_XDECREF(pb); Py_XDECREF(pc); Py_XDECREF(pd);
    PyBuffer_Release(&sz);
    return out;
}

/* One varint of a stream whose bounds `skip_varints` established: it ends at a terminator
 * byte inside the stream, so no bounds check is needed; an over-long or over-wide value
 * sets *bad. */
static inline uint64_t take_varint(const uint8_t **pp, int *bad) {
    const uint8_t *p = *pp;
    uint64_t b = *p++;
    if (b < 0x80) { *pp = p; return b; }
    uint64_t v = b & 0x7F;
    int shift = 7;
    do {
        b = *p++;
        if (shift == 63 && (b & 0x7E)) *bad = 1;
        v |= (b & 0x7F) << shift;
        shift += 7;
    } while ((b & 0x80) && shift < 70);
    if ((b & 0x80) || v > (uint64_t)INT64_MAX) *bad = 1;
    *pp = p;
    return v;
}

/* The position just after the `count`-th varint from p (a varint ends at a byte < 0x80),
 * or NULL when [p, end) holds fewer. */
static const uint8_t *skip_varints(const uint8_t *p, const uint8_t *end, Py_ssize_t count) {
    while (count > 0) {
        if (p >= end) return NULL;
        count -= *p++ < 0x80;
    }
    return p;
}

/* `count` (node gap, value) pairs of a stream whose bounds are established -> (node, value)
 * u32 pairs; 0, or -1 unless the nodes ascend strictly below n and the values fit. */
static int read_pairs(const uint8_t **pp, uint64_t count, Py_ssize_t n, uint32_t *out) {
    int bad = 0;
    uint64_t node = 0;
    for (uint64_t k = 0; k < count; k++) {
        uint64_t gap = take_varint(pp, &bad), v = take_varint(pp, &bad);
        node += gap;
        if ((k && gap == 0) || node >= (uint64_t)n || v > UINT32_MAX || bad) return -1;
        out[2 * k] = (uint32_t)node;
        out[2 * k + 1] = (uint32_t)v;
    }
    return 0;
}

/* decode_body(record, body, n, kinds, hflags, phantom_len, source_len, token_len[65536]
 *             int16, kind_limit, field_limit)
 * -> (kind u16, grammar u16, flags u8, field u16, size i32, start u32, end u32,
 *     unexpected i64, phantoms, parent i32, prev i32, child_count i32)
 *
 * The node table first (format 3: kind, grammar, opcode flags and field of each entry;
 * formats 1 and 2: kind and grammar, the flags in an opcode column and the fields in a
 * field column), then one counting pass over the opcodes locates every varint stream
 * (child counts or subtree sizes, gaps, explicit lengths, span exceptions, unexpected
 * chars); one pass over the nodes in preorder then fills every column, the structure (a
 * stack of open subtrees) and the internal spans: an internal node starts where the next
 * leaf in preorder starts and ends where its last leaf ends, known when its subtree
 * closes (format 3: when its last child's subtree has). */
const char *decode_columns(const uint8_t *buf, Py_ssize_t reclen, int version, Py_ssize_t body,
                           Py_ssize_t n, Py_ssize_t kinds, int hflags, Py_ssize_t phantom_len,
                           long long source_len, const int16_t *token_len, long kind_limit,
                           long field_limit, PyObject *cols[NCOLS]) {
    void *ptr[NCOLS];
    uint16_t *table = NULL; /* kind, grammar (and format 3: field) per entry */
    uint8_t *opmem = NULL;  /* format 3: each entry's opcode flags, then each node's */
    int32_t *stack = NULL;
    int64_t *spans = NULL;
    const uint8_t *stop = buf + reclen - 4; /* the CRC trails the body */
    const char *err = NULL;
    const int v3 = version == 3;
    const int wide_kind = hflags & 1, wide_field = !v3 && (hflags & 2);
    const int with_status = v3 ? (hflags & 4) != 0 : version == 2;
    if (version < 1 || version > 3) { err = "unsupported record format version"; goto done; }
    if (reclen < 4) { err = "record truncated"; goto done; }
    if (n <= 0 || n > INT32_MAX || body < 0 || (v3 ? 0 : n) + body > stop - buf) { err = "record truncated"; goto done; }
    const uint8_t *op = v3 ? NULL : buf + body;
    const uint8_t *kidx = v3 ? buf + body : buf + body + n;
    Py_ssize_t kw = wide_kind ? 2 : 1, fw = wide_field ? 2 : 1;
    if (kw * n > stop - kidx) { err = "record truncated in the kind column"; goto done; }
    const uint8_t *fcol = kidx + kw * n;
    size_t kmax = 0; /* every kind index in range, checked once rather than per node */
    if (wide_kind)
        for (Py_ssize_t i = 0; i < n; i++) {
            size_t k = (size_t)(kidx[2 * i] | kidx[2 * i + 1] << 8);
            kmax = k > kmax ? k : kmax;
        }
    else
        for (Py_ssize_t i = 0; i < n; i++) kmax = kidx[i] > kmax ? kidx[i] : kmax;
    if (kmax >= (size_t)kinds) { err = "kind index out of range"; goto done; }
    Py_ssize_t n_field = 0;
    if (!v3)
        for (Py_ssize_t i = 0; i < n; i++) n_field += (op[i] & HAS_FIELD) != 0;
    if (phantom_len < 0 || fw * n_field > stop - fcol ||
        phantom_len > stop - fcol - fw * n_field) { err = "record truncated in fields"; goto done; }
    const uint8_t *phant = fcol + fw * n_field;
    Reader r = {phant + phantom_len, stop};
    if (source_len > UINT32_MAX) { err = "source length out of range"; goto done; }

    /* the node table */
    table = malloc(sizeof(uint16_t) * 3 * (size_t)kinds);
    if (v3) opmem = malloc((size_t)kinds + (size_t)n);
    if (!table || (v3 && !opmem)) { PyErr_NoMemory(); err = "out of memory"; goto done; }
    for (Py_ssize_t k = 0; k < kinds; k++) {
        uint64_t v[4] = {0, 0, 0, 0};
        for (int j = 0; j < (v3 ? 4 : 2); j++)
            if (read_varint(&r, &v[j])) { err = "varint block truncated"; goto done; }
        for (int j = 0; j < 2; j++)
            if (v[j] >= (uint64_t)kind_limit && v[j] != 0xFFFF) { err = "kind id out of range"; goto done; }
        table[3 * k] = (uint16_t)v[0];
        table[3 * k + 1] = (uint16_t)v[1];
        table[3 * k + 2] = 0;
        if (v3) {
            uint8_t o = (uint8_t)v[2];
            if (v[2] > 0xFF || ((o & HAS_CHILDREN) && (o & UNEXPECTED))) { err = "node table entry out of range"; goto done; }
            if (v[3] > (uint64_t)field_limit || (v[3] && !(o & HAS_FIELD))) { err = "field id out of range"; goto done; }
            opmem[k] = o;
            table[3 * k + 2] = (uint16_t)v[3];
        }
    }
    if (v3) { /* each node's opcode flags, from its table entry */
        uint8_t *on = opmem + kinds;
        if (wide_kind)
            for (Py_ssize_t i = 0; i < n; i++) on[i] = opmem[kidx[2 * i] | kidx[2 * i + 1] << 8];
        else
            for (Py_ssize_t i = 0; i < n; i++) on[i] = opmem[kidx[i]];
        op = on;
    }
    Py_ssize_t n_inner = 0, n_explicit = 0, n_unexp = 0, n_explicit_leaf = 0;
    uint8_t inner_unexp = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* branch-free counts */
        uint8_t o = op[i], c = o & HAS_CHILDREN;
        n_inner += c;
        n_explicit += (o & EXPLICIT) != 0;
        n_explicit_leaf += (o & (HAS_CHILDREN | EXPLICIT)) == EXPLICIT;
        n_unexp += (o & UNEXPECTED) != 0;
        inner_unexp |= c & (o >> 7);
    }
    if (inner_unexp) { err = "UNEXPECTED on an internal node"; goto done; }
    if (op[n - 1] & HAS_CHILDREN) { err = "last node has children"; goto done; }
    Py_ssize_t n_leaf = n - n_inner, n_exception = n_explicit - n_explicit_leaf;

    const Py_ssize_t widths[NCOLS] = {2, 2, 1, 2, 4, 4, 4, 8, 1, 4, 4, 4, 0, 0};
    /* the status stream ends the block: locate and bound it before allocating */
    uint64_t n_status = 0, n_tails = 0;
    const uint8_t *pst = NULL, *ptl = NULL;
    {
        const uint8_t *q = skip_varints(r.p, stop, n_inner + n_leaf + n_explicit_leaf + 2 * n_exception + n_unexp);
        if (!q) { err = "varint block truncated"; goto done; }
        if (with_status) {
            Reader rs = {q, stop};
            if (read_varint(&rs, &n_status) || n_status > (uint64_t)n) { err = "status stream out of range"; goto done; }
            pst = rs.p;
            const uint8_t *qt = skip_varints(pst, stop, (Py_ssize_t)(2 * n_status));
            Reader rt = {qt, stop};
            if (!qt || read_varint(&rt, &n_tails) || n_tails > (uint64_t)n) { err = "status stream truncated"; goto done; }
            ptl = rt.p;
            if (skip_varints(ptl, stop, (Py_ssize_t)(2 * n_tails)) != stop) { err = "tail stream truncated or trailing bytes"; goto done; }
            stop = q; /* the streams below end where the status stream begins */
        }
    }
    for (int k = 0; k < NCOLS; k++) {
        Py_ssize_t len = k == 7 ? 8 * n_unexp : k == 8 ? phantom_len : k == 12 ? 8 * (Py_ssize_t)n_status :
                         k == 13 ? 8 * (Py_ssize_t)n_tails : widths[k] * n;
        if (k >= 12 && !with_status) { cols[k] = Py_NewRef(Py_None); continue; }
        cols[k] = new_bytes(len, &ptr[k]);
        if (!cols[k]) { err = "out of memory"; goto done; }
    }
    uint16_t *kind = ptr[0], *gram = ptr[1], *field = ptr[3];
    uint8_t *flags = ptr[2];
    int32_t *size = ptr[4];
    uint32_t *start = ptr[5], *end = ptr[6];
    int64_t *unexp = ptr[7];
    int32_t *parent = ptr[9], *prev = ptr[10], *child_count = ptr[11];
    memcpy(ptr[8], phant, (size_t)phantom_len);
    if (with_status) { /* status values: field << 2 | inherits << 1 | later */
        uint32_t *st = ptr[12];
        if (read_pairs(&pst, n_status, n, st)) { err = "status entry out of range"; goto done; }
        for (uint64_t k = 0; k < n_status; k++)
            if (st[2 * k + 1] > ((uint64_t)field_limit << 2 | 3)) { err = "status entry out of range"; goto done; }
    }

    /* open subtrees, their last child so far, and the index each one closes at (formats 1
     * and 2) or how many of its children are still to come (format 3) */
    stack = malloc(sizeof(int32_t) * 2 * (size_t)n + sizeof(int64_t) * (size_t)n);
    if (!stack) { PyErr_NoMemory(); err = "out of memory"; goto done; }
    int32_t *lastc = stack + n;
    int64_t *close_at = (int64_t *)(stack + 2 * n);
    /* span exceptions (lead, tail) by ordinal: an internal node with one keeps its ordinal
     * in its end column until its subtree closes, so the exceptions need n_exception slots
     * rather than two more stacks of n */
    spans = malloc(sizeof(int64_t) * 2 * (size_t)(n_exception + 1));
    if (!spans) { PyErr_NoMemory(); err = "out of memory"; goto done; }
    Py_ssize_t xi = 0;
    const uint8_t *ps = r.p; /* the streams, in block order */
    const uint8_t *pg = skip_varints(ps, stop, n_inner);
    const uint8_t *pl = pg ? skip_varints(pg, stop, n_leaf) : NULL;
    const uint8_t *px = pl ? skip_varints(pl, stop, n_explicit_leaf) : NULL;
    const uint8_t *pu = px ? skip_varints(px, stop, 2 * n_exception) : NULL;
    const uint8_t *pe = pu ? skip_varints(pu, stop, n_unexp) : NULL;
    if (!pe) { err = "varint block truncated"; goto done; }
    if (pe != stop) { err = "trailing bytes after the varint block"; goto done; }

    int bad = 0, field_bad = 0, span_bad = 0;
    Py_ssize_t fi = 0, ui = 0, sp = 0, pending = 0;
    /* an internal node's span is complete when its subtree closes (its last leaf ends at
     * `last_end`, the node before `at`); only a span exception can then leave it out of
     * range */
#define CLOSE_SUBTREE(at, last_end) do {                                              \
        int32_t j = stack[--sp];                                                      \
        int64_t e0 = (last_end);                                                      \
        size[j] = (int32_t)((at) - j);                                                \
        if (op[j] & EXPLICIT) {                                                       \
            const int64_t *x = spans + 2 * end[j];                                    \
            int64_t s0 = (int64_t)start[j] - x[0];                                    \
            e0 += x[1];                                                               \
            span_bad |= (s0 < 0) | (e0 > source_len) | (s0 > e0);                     \
            start[j] = (uint32_t)s0;                                                  \
        }                                                                             \
        end[j] = (uint32_t)e0;                                                        \
    } while (0)
    int64_t pos = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t o = op[i];
        size_t k = wide_kind ? (size_t)(kidx[2 * i] | kidx[2 * i + 1] << 8) : kidx[i];
        uint16_t kd = table[3 * k];
        kind[i] = kd;
        gram[i] = table[3 * k + 1];
        flags[i] = o & (uint8_t)~EXPLICIT;
        if (v3) {
            field[i] = table[3 * k + 2];
        } else {
            /* branch-free field: the column is read one entry ahead (inside the record:
             * the varint block and the CRC follow it) and kept only when the node has one */
            int has_field = (o & HAS_FIELD) != 0;
            uint16_t f = wide_field ? (uint16_t)(fcol[2 * fi] | fcol[2 * fi + 1] << 8) : fcol[fi];
            f = has_field ? f : 0;
            fi += has_field;
            field_bad |= f > field_limit;
            field[i] = f;
        }
        /* close the subtrees that end before i: their last leaf is node i - 1 */
        while (sp && (v3 ? close_at[sp - 1] == 0 : close_at[sp - 1] <= i)) CLOSE_SUBTREE(i, end[i - 1]);
        child_count[i] = 0;
        if (sp) {
            int32_t p = stack[sp - 1];
            parent[i] = p;
            prev[i] = lastc[sp - 1];
            lastc[sp - 1] = (int32_t)i;
            child_count[p]++;
            if (v3) close_at[sp - 1]--;
        } else if (i) {
            err = "more than one root"; goto done;
        } else {
            parent[i] = prev[i] = -1;
        }
        if (o & HAS_CHILDREN) {
            uint64_t v = take_varint(&ps, &bad);
            if (v > (uint64_t)(n - i - 2)) { err = v3 ? "child count out of range" : "subtree size out of range"; goto done; }
            if (v3) {
                close_at[sp] = (int64_t)v + 1; /* children to come */
            } else {
                int64_t sz = (int64_t)v + 2;
                if (sp && i + sz > close_at[sp - 1]) { err = "subtree sizes do not nest"; goto done; }
                close_at[sp] = i + sz;
            }
            start[i] = end[i] = 0; /* the first leaf's start is set when it comes */
            if (o & EXPLICIT) { /* span exception: applied when the subtree closes */
                spans[2 * xi] = unzigzag(take_varint(&px, &bad));
                spans[2 * xi + 1] = unzigzag(take_varint(&px, &bad));
                end[i] = (uint32_t)xi++;
            }
            stack[sp] = (int32_t)i;
            lastc[sp] = -1;
            sp++;
        } else {
            size[i] = 1;
            uint64_t gap = take_varint(&pg, &bad);
            if (gap > (uint64_t)(source_len - pos)) { err = "gap runs past the source"; goto done; }
            pos += (int64_t)gap;
            int64_t len;
            if (o & EXPLICIT) {
                uint64_t v = take_varint(&pl, &bad);
                if (v > (uint64_t)source_len) { err = "leaf length out of range"; goto done; }
                len = (int64_t)v;
            } else {
                len = token_len[kd];
                if (len < 0) { err = "leaf length missing"; goto done; }
            }
            if (len > source_len - pos) { err = "leaf runs past the source"; goto done; }
            for (; pending < i; pending++) start[pending] = (uint32_t)pos; /* internals since the last leaf */
            pending = i + 1;
            start[i] = (uint32_t)pos;
            pos += len;
            end[i] = (uint32_t)pos;
            if (o & UNEXPECTED) unexp[ui++] = unzigzag(take_varint(&pu, &bad));
        }
        if (bad) { err = "varint out of range"; goto done; }
    }
    if (field_bad) { err = "field id out of range"; goto done; }
    while (sp) {
        if (v3 && close_at[sp - 1]) { err = "child counts run past the last node"; goto done; }
        CLOSE_SUBTREE(n, end[n - 1]);
    }
    if (span_bad) { err = "span exception out of range"; goto done; }
#undef CLOSE_SUBTREE
    if (with_status) { /* tails: how far past the node's end; made absolute */
        uint32_t *tl = ptr[13];
        if (read_pairs(&ptl, n_tails, n, tl)) { err = "tail entry out of range"; goto done; }
        for (uint64_t k = 0; k < n_tails; k++) {
            uint32_t node = tl[2 * k], past = tl[2 * k + 1];
            if (past == 0 || past > (uint64_t)source_len - end[node]) { err = "tail entry out of range"; goto done; }
            tl[2 * k + 1] = end[node] + past;
        }
    }
done:
    free(table);
    free(opmem);
    free(stack);
    free(spans);
    return err;
}

PyObject *decode_body(PyObject *self, PyObject *args) {
    Py_buffer rec, tok;
    Py_ssize_t body, n, kinds, phantom_len;
    int hflags;
    long long source_len;
    long kind_limit, field_limit;
    if (!PyArg_ParseTuple(args, "y*nnninLy*ll", &rec, &body, &n, &kinds, &hflags,
                          &phantom_len, &source_len, &tok, &kind_limit, &field_limit))
        return NULL;
    PyObject *cols[NCOLS] = {0}, *result = NULL;
    const char *err = tok.len != 65536 * 2 || rec.len < 5 ? "token table size or record" :
        decode_columns(rec.buf, rec.len, ((const uint8_t *)rec.buf)[4], body, n, kinds, hflags, phantom_len,
                       source_len, tok.buf, kind_limit, field_limit, cols);
    if (!err) result = PyTuple_New(NCOLS);
    if (result)
        for (int k = 0; k < NCOLS; k++) { PyTuple_SET_ITEM(result, k, cols[k]); cols[k] = NULL; }
    if (err && !PyErr_Occurred()) corrupt(err);
    for (int k = 0; k < NCOLS; k++) Py_XDECREF(cols[k]);
    PyBuffer_Release(&rec);
    PyBuffer_Release(&tok);
    return result;
}


/* ---------------------------------------------------------------------------------------
 * Record encoding: columns -> record body (the CRC32C is appended by the caller).
 * ------------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
} Writer;

static inline void put_varint(Writer *w, uint64_t v) {
    while (v >= 0x80) { *w->p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *w->p++ = (uint8_t)v;
}

static inline uint64_t zigzag64(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline void put_le(uint8_t **p, uint64_t v, int bytes) {
    for (int k = 0; k < bytes; k++) { *(*p)++ = (uint8_t)(v >> (8 * k)); }
}

PyObject *EncodeErr;

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static inline size_t hash_u64(uint64_t k, int bits) {
    return (size_t)((k * 0x9E3779B97F4A7C15ULL) >> (64 - bits));
}

/* encode_body(kind u16, gram u16, flags u8, field u16, size i64, start i64, end i64,
 *             unexpected i64, token_len i16[65536], identity, phantoms, source_len, source_crc,
 *             status u32 pairs or None, tails u32 pairs or None) -> record body bytes
 *             (format 3; header flag 4 when the status stream is present)
 *
 * Each node's (kind, grammar, opcode flags, field) is one entry of the record's node table
 * (distinct entries, ascending), and the node is stored as its entry's index: one byte
 * while the table has at most 256 entries. */
PyObject *encode_body(PyObject *self, PyObject *args) {
    Py_buffer b[11];
    const char *ident, *phant;
    Py_ssize_t ilen, plen;
    unsigned long long slen, scrc;
    PyObject *status_obj = Py_None, *tails_obj = Py_None;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y#y#KK|OO", &b[0], &b[1], &b[2], &b[3], &b[4],
                          &b[5], &b[6], &b[7], &b[8], &ident, &ilen, &phant, &plen, &slen, &scrc,
                          &status_obj, &tails_obj))
        return NULL;
    int with_status = status_obj != Py_None;
    if ((with_status && PyObject_GetBuffer(status_obj, &b[9], PyBUF_C_CONTIGUOUS) < 0) ||
        (with_status && tails_obj != Py_None && PyObject_GetBuffer(tails_obj, &b[10], PyBUF_C_CONTIGUOUS) < 0)) {
        for (int k = 0; k < 11; k++) if (b[k].obj) PyBuffer_Release(&b[k]);
        return NULL;
    }
    const uint32_t *status = with_status ? b[9].buf : NULL;
    Py_ssize_t n_status = with_status ? b[9].len / 8 : 0;
    const uint32_t *tails = b[10].obj ? b[10].buf : NULL;
    Py_ssize_t n_tails = b[10].obj ? b[10].len / 8 : 0;
    const uint16_t *kind = b[0].buf, *gram = b[1].buf, *field = b[3].buf;
    const uint8_t *flags = b[2].buf;
    const int64_t *size = b[4].buf, *start = b[5].buf, *end = b[6].buf, *unexp = b[7].buf;
    const int16_t *token_len = b[8].buf;
    Py_ssize_t n = b[2].len, n_unexp = b[7].len / 8;
    PyObject *out = NULL;
    const char *err = NULL;
    uint8_t *mem = NULL, *op = NULL;
    int64_t *fls = NULL;
    uint64_t *keys = NULL, *slots = NULL, *table = NULL;
    uint32_t *slot_idx = NULL;
    if (n <= 0 || b[0].len != 2 * n || b[1].len != 2 * n || b[3].len != 2 * n ||
        b[4].len != 8 * n || b[5].len != 8 * n || b[6].len != 8 * n || b[8].len != 65536 * 2 ||
        ilen > 255 || n > (Py_ssize_t)UINT32_MAX || slen > UINT32_MAX ||
        (with_status && b[9].len % 8) || (b[10].obj && b[10].len % 8)) {
        err = "column lengths disagree or out of range";
        goto done;
    }
    for (Py_ssize_t k = 0; k < n_status; k++)
        if (status[2 * k] >= (uint64_t)n || (k && status[2 * k] <= status[2 * k - 2])) {
            err = "status entries out of order or range";
            goto done;
        }
    for (Py_ssize_t k = 0; k < n_tails; k++)
        if (tails[2 * k] >= (uint64_t)n || (k && tails[2 * k] <= tails[2 * k - 2]) ||
            tails[2 * k + 1] <= end[tails[2 * k]] || tails[2 * k + 1] > slen) {
            err = "tail entries out of order or range";
            goto done;
        }
    Py_ssize_t n_inner = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (size[i] > 1) n_inner++;
        if (size[i] < 1 || size[i] > n - i) { err = "subtree size out of range"; goto done; }
    }
    op = malloc((size_t)n);
    fls = malloc(sizeof(int64_t) * (size_t)n);
    keys = malloc(sizeof(uint64_t) * (size_t)n);
    if (!op || !fls || !keys) { PyErr_NoMemory(); goto done; }
    /* first leaf start of every node (reverse pass), the opcodes and the table keys */
    for (Py_ssize_t i = n - 1; i >= 0; i--) fls[i] = size[i] > 1 ? fls[i + 1] : start[i];
    int64_t prev_end = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t o = flags[i] & (uint8_t)~EXPLICIT;
        if (size[i] > 1) {
            o |= HAS_CHILDREN;
            if (fls[i] != start[i] || end[i + size[i] - 1] != end[i]) o |= EXPLICIT;
            if (o & UNEXPECTED) { err = "UNEXPECTED on an internal node"; goto done; }
        } else {
            o &= (uint8_t)~HAS_CHILDREN;
            if (start[i] < prev_end || end[i] < start[i]) { err = "leaves overlap or run backwards"; goto done; }
            prev_end = end[i];
            if (end[i] - start[i] != token_len[kind[i]]) o |= EXPLICIT;
        }
        op[i] = o;
        keys[i] = (uint64_t)kind[i] << 48 | (uint64_t)gram[i] << 32 | (uint64_t)o << 16 |
                  ((o & HAS_FIELD) ? field[i] : 0);
    }
    /* the distinct keys (an open-addressing set), ascending, then each node's index */
    int bits = 10;
    size_t n_keys = 0, cap = (size_t)1 << bits;
    slots = malloc(sizeof(uint64_t) * cap);
    if (!slots) { PyErr_NoMemory(); goto done; }
    memset(slots, 0xFF, sizeof(uint64_t) * cap); /* all ones: empty (no key has it) */
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t key = keys[i];
        size_t h = hash_u64(key, bits);
        while (slots[h] != UINT64_MAX && slots[h] != key) h = (h + 1) & (cap - 1);
        if (slots[h] == key) continue;
        slots[h] = key;
        if (++n_keys > 0xFFFF) { err = "too many distinct node kinds"; goto done; }
        if (2 * n_keys > cap) { /* grow and rehash */
            size_t ncap = cap * 2;
            uint64_t *ns = malloc(sizeof(uint64_t) * ncap);
            if (!ns) { PyErr_NoMemory(); goto done; }
            memset(ns, 0xFF, sizeof(uint64_t) * ncap);
            bits++;
            for (size_t j = 0; j < cap; j++)
                if (slots[j] != UINT64_MAX) {
                    size_t g = hash_u64(slots[j], bits);
                    while (ns[g] != UINT64_MAX) g = (g + 1) & (ncap - 1);
                    ns[g] = slots[j];
                }
            free(slots);
            slots = ns;
            cap = ncap;
        }
    }
    table = malloc(sizeof(uint64_t) * n_keys);
    slot_idx = malloc(sizeof(uint32_t) * cap);
    if (!table || !slot_idx) { PyErr_NoMemory(); goto done; }
    size_t t = 0;
    for (size_t j = 0; j < cap; j++) if (slots[j] != UINT64_MAX) table[t++] = slots[j];
    qsort(table, n_keys, sizeof(uint64_t), cmp_u64);
    for (size_t k = 0; k < n_keys; k++) {
        size_t h = hash_u64(table[k], bits);
        while (slots[h] != table[k]) h = (h + 1) & (cap - 1);
        slot_idx[h] = (uint32_t)k;
    }
    int wide_kind = n_keys > 256;
    size_t bound = 25 + (size_t)ilen + (size_t)n * 2 + (size_t)plen +
                   10 * (4 * n_keys + 2 * (size_t)n + 2 * (size_t)n_inner + (size_t)n_unexp +
                          2 + 2 * (size_t)n_status + 2 * (size_t)n_tails);
    mem = malloc(bound);
    if (!mem) { PyErr_NoMemory(); goto done; }
    uint8_t *p = mem;
    memcpy(p, "CSTV", 4); p += 4;
    *p++ = 3;
    *p++ = (uint8_t)((wide_kind ? 1 : 0) | (with_status ? 4 : 0));
    put_le(&p, (uint64_t)n, 4);
    put_le(&p, slen, 4);
    put_le(&p, scrc, 4);
    put_le(&p, n_keys, 2);
    *p++ = (uint8_t)ilen;
    put_le(&p, (uint64_t)plen, 4);
    memcpy(p, ident, (size_t)ilen); p += ilen;
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t h = hash_u64(keys[i], bits);
        while (slots[h] != keys[i]) h = (h + 1) & (cap - 1);
        put_le(&p, slot_idx[h], wide_kind ? 2 : 1);
    }
    memcpy(p, phant, (size_t)plen); p += plen;
    Writer w = {p};
    for (size_t k = 0; k < n_keys; k++) {
        uint64_t key = table[k];
        put_varint(&w, key >> 48);
        put_varint(&w, (key >> 32) & 0xFFFF);
        put_varint(&w, (key >> 16) & 0xFF);
        put_varint(&w, key & 0xFFFF);
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (size[i] > 1) { /* child count - 1: the children are i + 1, then each one's next sibling */
            uint64_t c = 0;
            for (Py_ssize_t j = i + 1; j < i + size[i]; j += size[j]) c++;
            put_varint(&w, c - 1);
        }
    prev_end = 0;
    for (Py_ssize_t i = 0; i < n; i++) if (size[i] == 1) { put_varint(&w, (uint64_t)(start[i] - prev_end)); prev_end = end[i]; }
    for (Py_ssize_t i = 0; i < n; i++) if (size[i] == 1 && (op[i] & EXPLICIT)) put_varint(&w, (uint64_t)(end[i] - start[i]));
    for (Py_ssize_t i = 0; i < n; i++)
        if (size[i] > 1 && (op[i] & EXPLICIT)) {
            put_varint(&w, zigzag64(fls[i] - start[i]));
            put_varint(&w, zigzag64(end[i] - end[i + size[i] - 1]));
        }
    for (Py_ssize_t k = 0; k < n_unexp; k++) put_varint(&w, zigzag64(unexp[k]));
    if (with_status) { /* the query-status stream, (node gap, value) pairs */
        put_varint(&w, (uint64_t)n_status);
        uint64_t last = 0;
        for (Py_ssize_t k = 0; k < n_status; k++) {
            put_varint(&w, status[2 * k] - last);
            put_varint(&w, status[2 * k + 1]);
            last = status[2 * k];
        }
        put_varint(&w, (uint64_t)n_tails); /* then the group tails: (node gap, end past the node's) */
        last = 0;
        for (Py_ssize_t k = 0; k < n_tails; k++) {
            put_varint(&w, tails[2 * k] - last);
            put_varint(&w, (uint64_t)(tails[2 * k + 1] - end[tails[2 * k]]));
            last = tails[2 * k];
        }
    }
    out = PyBytes_FromStringAndSize((const char *)mem, w.p - mem);
done:
    if (err && !PyErr_Occurred()) PyErr_SetString(EncodeErr, err);
    free(mem); free(op); free(fls); free(keys); free(slots); free(table); free(slot_idx);
    for (int k = 0; k < 11; k++) if (b[k].obj) PyBuffer_Release(&b[k]);
    return out;
}


/* definition_rows(data, n, at) -> [(kind, start, end, name_start, name_end)]: the LEB128
 * columns of a blob's packed definitions (tags.pack_definitions: per definition kind, name
 * start delta, name length, zigzag node start - name start, node length) from offset `at`,
 * bounds-checked (CorruptRecord). */
PyObject *definition_rows(PyObject *self, PyObject *args) {
    Py_buffer d;
    Py_ssize_t n, at;
    if (!PyArg_ParseTuple(args, "y*nn", &d, &n, &at)) return NULL;
    PyObject *out = n >= 0 && at >= 0 && at <= d.len ? PyList_New(n) : NULL;
    if (!out) { PyBuffer_Release(&d); return PyErr_Occurred() ? NULL : corrupt("definitions out of range"); }
    Reader r = {(const uint8_t *)d.buf + at, (const uint8_t *)d.buf + d.len};
    int64_t name_start = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        uint64_t v[5];
        for (int j = 0; j < 5; j++)
            if (read_varint(&r, &v[j])) { Py_DECREF(out); PyBuffer_Release(&d); return corrupt("definitions truncated"); }
        name_start += (int64_t)v[1];
        int64_t start = name_start + unzigzag(v[3]);
        PyObject *row = Py_BuildValue("(KLLLL)", (unsigned long long)v[0], (long long)start,
                                      (long long)(start + (int64_t)v[4]), (long long)name_start,
                                      (long long)(name_start + (int64_t)v[2]));
        if (!row) { Py_DECREF(out); PyBuffer_Release(&d); return NULL; }
        PyList_SET_ITEM(out, k, row);
    }
    PyBuffer_Release(&d);
    if (r.p != r.end) { Py_DECREF(out); return corrupt("trailing bytes after the definitions"); }
    return out;
}
