/* cstvault._native: parse + extract in tree-sitter's C.
 *
 * parse_extract(source, language_capsule) parses `source` with the tree-sitter runtime
 * (the same pinned release py-tree-sitter wraps) and walks its subtrees once, filling
 * the column buffers that cstvault.extract documents.  No Python object is created per
 * node.  The runtime allocates through pymalloc under the GIL.
 */
#include "_native.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "tree_sitter/api.h"
/* Internal headers of the pinned runtime we compile in: the extraction walks subtrees
 * directly, and looks for hidden MISSING tokens, which the public API cannot enumerate. */
#include "language.h"
#include "subtree.h"
#include "tree.h"

#define HAS_CHILDREN 0x01
#define NAMED 0x02
#define EXTRA 0x04
#define MISSING 0x08
#define HAS_FIELD 0x10
#define HAS_ERROR 0x20
#define UNEXPECTED 0x80
#define ERROR_SYMBOL 0xFFFF

typedef struct {
    size_t n, cap;
    uint16_t *kind, *gram, *field;
    uint8_t *flags;
    uint32_t *size, *start, *end;
    int64_t *unexpected;
    size_t n_unexpected, unexpected_cap;
} Columns;

static void columns_free(Columns *c) {
    free(c->kind); free(c->gram); free(c->field); free(c->flags);
    free(c->size); free(c->start); free(c->end); free(c->unexpected);
}

static int grow(void **p, size_t elem, size_t cap) {
    void *q = realloc(*p, elem * (cap ? cap : 1));
    if (!q) return -1;
    *p = q;
    return 0;
}

static int columns_reserve(Columns *c, size_t cap) {
    if (cap <= c->cap) return 0;
    if (grow((void **)&c->kind, 2, cap) || grow((void **)&c->gram, 2, cap) ||
        grow((void **)&c->field, 2, cap) || grow((void **)&c->flags, 1, cap) ||
        grow((void **)&c->size, 4, cap) || grow((void **)&c->start, 4, cap) ||
        grow((void **)&c->end, 4, cap))
        return -1;
    c->cap = cap;
    return 0;
}

/* The char of tree-sitter's "(UNEXPECTED c)" rendering; 0 = not such a rendering. */
static int unexpected_char(TSNode n, int64_t *out) {
    char *s = ts_node_string(n);
    if (!s) return 0;
    static const char prefix[] = "(UNEXPECTED ";
    int found = 0;
    if (strncmp(s, prefix, sizeof(prefix) - 1) == 0) {
        const char *t = s + sizeof(prefix) - 1;
        size_t len = strlen(t);
        if (len && t[len - 1] == ')') len--;
        found = 1;
        if (len == 7 && strncmp(t, "INVALID", 7) == 0) *out = -1;
        else if (len == 4 && t[0] == '\'' && t[1] == '\\' && t[3] == '\'') {
            switch (t[2]) {
                case '0': *out = 0; break;
                case 'n': *out = 10; break;
                case 't': *out = 9; break;
                case 'r': *out = 13; break;
                default: found = 0;
            }
        } else if (len == 3 && t[0] == '\'' && t[2] == '\'') *out = (unsigned char)t[1];
        else *out = strtoll(t, NULL, 10);
    }
    PyMem_Free(s); /* allocated by the runtime's allocator: pymalloc */
    return found;
}

/* Does any invisible subtree carry the MISSING mark?  Such tokens print in
 * ts_node_string but have no visible node ("phantoms", see cstvault.sexp).
 * Returns 1 / 0, or -1 on allocation failure. */
static int has_hidden_missing(const TSTree *tree) {
    size_t cap = 256, sp = 0;
    Subtree *stack = malloc(cap * sizeof(Subtree));
    if (!stack) return -1;
    stack[sp++] = tree->root;
    int found = 0;
    while (sp && !found) {
        Subtree s = stack[--sp];
        if (ts_subtree_missing(s) && !ts_subtree_visible(s)) { found = 1; break; }
        uint32_t k = ts_subtree_child_count(s);
        if (!k || !ts_subtree_error_cost(s)) continue;  /* MISSING implies an error cost */
        if (sp + k > cap) {
            while (sp + k > cap) cap *= 2;
            Subtree *q = realloc(stack, cap * sizeof(Subtree));
            if (!q) { free(stack); return -1; }
            stack = q;
        }
        const Subtree *children = ts_subtree_children(s);
        for (uint32_t j = 0; j < k; j++) stack[sp++] = children[j];
    }
    free(stack);
    return found;
}

/* One level of the walk: a subtree whose children are being visited. */
typedef struct {
    Subtree parent;
    const TSSymbol *aliases;                 /* alias sequence of its production, or NULL */
    const TSFieldMapEntry *fmap, *fmap_end;  /* field map of its production */
    uint32_t child, structural, pos;         /* next child, its structural index and start */
    TSFieldId chain;     /* an invisible parent's own field, inherited by its children */
    int64_t out;         /* the parent's preorder index when it is visible, else -1 */
} Frame;

static int frame_push(Frame **stack, size_t *sp, size_t *cap, const TSLanguage *lang,
                      Subtree s, uint32_t pos, TSFieldId chain, int64_t out) {
    if (*sp == *cap) {
        size_t k = *cap ? *cap * 2 : 64;
        Frame *q = realloc(*stack, k * sizeof(Frame));
        if (!q) return -1;
        *stack = q;
        *cap = k;
    }
    Frame *f = &(*stack)[(*sp)++];
    uint16_t prod = s.ptr->production_id;
    f->parent = s;
    f->aliases = ts_language_alias_sequence(lang, prod);
    ts_language_field_map(lang, prod, &f->fmap, &f->fmap_end);
    f->child = f->structural = 0;
    f->pos = pos;
    f->chain = chain;
    f->out = out;
    return 0;
}

/* Append one visible node; returns its preorder index, or -1 on allocation failure. */
static int64_t emit(Columns *c, const TSTree *tree, const Subtree *s, uint32_t start,
                    TSSymbol alias, TSFieldId fid, int has_errors) {
    if (c->n == c->cap && columns_reserve(c, c->cap * 2)) return -1;
    size_t i = c->n++;
    const TSLanguage *lang = tree->language;
    Subtree t = *s;
    TSSymbol sym = ts_subtree_symbol(t);
    uint8_t fl;
    if (alias) {
        c->kind[i] = ts_language_public_symbol(lang, alias);
        fl = ts_language_symbol_metadata(lang, alias).named ? NAMED : 0;
    } else {
        c->kind[i] = ts_language_public_symbol(lang, sym);
        fl = ts_subtree_named(t) ? NAMED : 0;
    }
    if (ts_subtree_extra(t)) fl |= EXTRA;
    if (fid) fl |= HAS_FIELD;
    c->gram[i] = sym;
    c->field[i] = fid;
    c->start[i] = start;
    c->end[i] = start + ts_subtree_size(t).bytes;
    c->size[i] = 1;
    if (has_errors) {
        if (ts_subtree_missing(t)) fl |= MISSING;
        if (ts_subtree_error_cost(t) > 0) fl |= HAS_ERROR;
        int64_t ch;
        Length at = {start, {0, 0}};
        if (c->kind[i] == ERROR_SYMBOL && ts_subtree_child_count(t) == 0 &&
            unexpected_char(ts_node_new(tree, s, at, alias), &ch)) {
            if (c->n_unexpected == c->unexpected_cap) {
                size_t cap = c->unexpected_cap ? c->unexpected_cap * 2 : 16;
                if (grow((void **)&c->unexpected, 8, cap)) return -1;
                c->unexpected_cap = cap;
            }
            c->unexpected[c->n_unexpected++] = ch;
            fl |= UNEXPECTED;
        }
    }
    c->flags[i] = fl;
    return (int64_t)i;
}

/* Walk the whole tree in preorder straight over its subtrees (what TSTreeCursor visits,
 * without its per-step stack searches): invisible subtrees are descended into, aliases
 * and field ids resolved as ts_tree_cursor_current_node / _current_field_id do.
 * Returns 0, or -1 on allocation failure. */
static int walk(TSTree *tree, Columns *c, int has_errors) {
    const TSLanguage *lang = tree->language;
    if (columns_reserve(c, ts_node_descendant_count(ts_tree_root_node(tree)))) return -1;
    uint32_t start = ts_subtree_padding(tree->root).bytes;
    if (emit(c, tree, &tree->root, start, 0, 0, has_errors) < 0) return -1;
    if (ts_subtree_child_count(tree->root) == 0) return 0;
    Frame *stack = NULL;
    size_t sp = 0, cap = 0;
    if (frame_push(&stack, &sp, &cap, lang, tree->root, start, 0, 0)) return -1;
    int rc = 0;
    while (sp) {
        Frame *f = &stack[sp - 1];
        uint32_t count = f->parent.ptr->child_count;
        if (f->child == count) {
            if (f->out >= 0) {
                size_t j = (size_t)f->out;
                c->size[j] = (uint32_t)(c->n - j);
                if (c->n - j > 1) c->flags[j] |= HAS_CHILDREN;
            }
            sp--;
            continue;
        }
        const Subtree *children = ts_subtree_children(f->parent);
        const Subtree *cs = &children[f->child];
        Subtree ch = *cs;
        uint32_t at = f->pos;
        TSSymbol alias = 0;
        TSFieldId fid = 0;
        if (!ts_subtree_extra(ch)) {
            if (f->aliases) alias = f->aliases[f->structural];
            for (const TSFieldMapEntry *m = f->fmap; m < f->fmap_end; m++) {
                if (!m->inherited && m->child_index == f->structural) { fid = m->field_id; break; }
            }
            if (!fid) fid = f->chain;
            f->structural++;
        }
        f->child++;
        f->pos = at + ts_subtree_size(ch).bytes;
        if (f->child < count) f->pos += ts_subtree_padding(children[f->child]).bytes;
        uint32_t kids = ts_subtree_child_count(ch);
        if (ts_subtree_visible(ch) || alias) {
            int64_t i = emit(c, tree, cs, at, alias, fid, has_errors);
            if (i < 0 || (kids && frame_push(&stack, &sp, &cap, lang, ch, at, 0, i))) {
                rc = -1;
                break;
            }
        } else if (kids && ch.ptr->visible_child_count > 0) {
            if (frame_push(&stack, &sp, &cap, lang, ch, at, fid, -1)) { rc = -1; break; }
        }
    }
    free(stack);
    return rc;
}

/* A small pool of parsers, taken and returned while holding the GIL. */
#define POOL 32
static struct { const TSLanguage *lang; TSParser *parser; } pool[POOL];
static int pool_size = 0;

TSParser *take_parser(const TSLanguage *lang) {
    for (int k = pool_size - 1; k >= 0; k--) {
        if (pool[k].lang == lang) {
            TSParser *p = pool[k].parser;
            pool[k] = pool[--pool_size];
            return p;
        }
    }
    TSParser *p = ts_parser_new();
    if (p && !ts_parser_set_language(p, lang)) { ts_parser_delete(p); return NULL; }
    return p;
}

void give_parser(const TSLanguage *lang, TSParser *p) {
    if (pool_size == POOL) { ts_parser_delete(pool[0].parser); pool[0] = pool[--pool_size]; }
    pool[pool_size].lang = lang;
    pool[pool_size].parser = p;
    pool_size++;
}

static PyObject *bytes_of(const void *p, size_t len) {
    return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
}

static PyObject *parse_extract(PyObject *self, PyObject *args) {
    Py_buffer src;
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "y*O", &src, &capsule)) return NULL;
    const TSLanguage *lang = PyCapsule_GetPointer(capsule, "tree_sitter.Language");
    if (!lang) { PyBuffer_Release(&src); return NULL; }
    if (src.len > (Py_ssize_t)UINT32_MAX) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "source larger than 4 GiB");
        return NULL;
    }
    Columns c;
    memset(&c, 0, sizeof c);
    TSTree *tree = NULL;
    int ok_lang = 1, rc = 0, has_errors = 0;
    char *sexp = NULL;
    TSParser *parser = take_parser(lang);
    if (!parser) ok_lang = 0;
    /* The GIL stays held: the runtime allocates through pymalloc (see PyInit__native),
     * which is markedly faster than malloc for tree-sitter's many small subtrees. */
    if (parser) tree = ts_parser_parse_string(parser, NULL, src.buf, (uint32_t)src.len);
    if (tree) {
        has_errors = ts_node_has_error(ts_tree_root_node(tree));
        rc = walk(tree, &c, has_errors);
        if (has_errors && rc == 0) {
            int hidden = has_hidden_missing(tree);
            if (hidden < 0) rc = -1;
            else if (hidden) sexp = ts_node_string(ts_tree_root_node(tree));
        }
        ts_tree_delete(tree);
    }
    if (parser) {
        ts_parser_reset(parser);
        give_parser(lang, parser);
    }
    PyBuffer_Release(&src);
    if (!ok_lang) {
        columns_free(&c);
        PyErr_SetString(PyExc_ValueError, "incompatible grammar ABI for this tree-sitter runtime");
        return NULL;
    }
    if (!tree) { columns_free(&c); PyErr_SetString(PyExc_RuntimeError, "parse failed"); return NULL; }
    if (rc) { columns_free(&c); PyMem_Free(sexp); return PyErr_NoMemory(); }
    PyObject *text = sexp ? PyUnicode_DecodeUTF8(sexp, strlen(sexp), "surrogateescape") : Py_NewRef(Py_None);
    PyMem_Free(sexp);
    PyObject *out = text ? Py_BuildValue(
        "(nNNNNNNNNN)", (Py_ssize_t)c.n,
        bytes_of(c.kind, 2 * c.n), bytes_of(c.gram, 2 * c.n), bytes_of(c.flags, c.n),
        bytes_of(c.field, 2 * c.n), bytes_of(c.size, 4 * c.n), bytes_of(c.start, 4 * c.n),
        bytes_of(c.end, 4 * c.n), bytes_of(c.unexpected, 8 * c.n_unexpected), text) : NULL;
    columns_free(&c);
    return out;
}


/* ---------------------------------------------------------------------------------------
 * Record decoding (docs/format.md): one C pass per column, every read bounds-checked.
 * ------------------------------------------------------------------------------------- */

#define EXPLICIT 0x40
#define NCOLS 12 /* the decoder's buffers (decode_body) */

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

static PyObject *Corrupt;

static PyObject *corrupt(const char *msg) {
    PyErr_SetString(Corrupt, msg);
    return NULL;
}

static PyObject *new_bytes(Py_ssize_t len, void **data) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, len);
    if (b) *data = PyBytes_AS_STRING(b);
    return b;
}

/* structure(size: int64 buffer) -> (parent, prev, child_count, depth) as int32 bytes */
static PyObject *py_structure(PyObject *self, PyObject *args) {
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

/* decode_body(record, body, n, kinds, wide_kind, wide_field, phantom_len, source_len,
 *             token_len[65536] int16, kind_limit, field_limit)
 * -> (kind u16, grammar u16, flags u8, field u16, size i32, start u32, end u32,
 *     unexpected i64, phantoms, parent i32, prev i32, child_count i32)
 *
 * One counting pass over the opcodes locates every varint stream (sizes, gaps, explicit
 * lengths, span exceptions, unexpected chars); one pass over the nodes in preorder then
 * fills every column, the structure (a stack of open subtrees) and the internal spans:
 * an internal node starts where the next leaf in preorder starts and ends where its last
 * leaf ends, which is known when its subtree closes. */
static const char *decode_columns(const uint8_t *buf, Py_ssize_t reclen, Py_ssize_t body,
                                  Py_ssize_t n, Py_ssize_t kinds, int wide_kind, int wide_field,
                                  Py_ssize_t phantom_len, long long source_len,
                                  const int16_t *token_len, long kind_limit, long field_limit,
                                  PyObject *cols[NCOLS]) {
    void *ptr[NCOLS];
    uint16_t *table = NULL;
    int32_t *stack = NULL;
    int64_t *spans = NULL;
    const uint8_t *stop = buf + reclen - 4; /* the CRC trails the body */
    const char *err = NULL;
    if (reclen < 4) { err = "record truncated"; goto done; }
    if (n <= 0 || n > INT32_MAX || body < 0 || body + n > stop - buf) { err = "record truncated"; goto done; }
    const uint8_t *op = buf + body;
    const uint8_t *kidx = op + n;
    Py_ssize_t kw = wide_kind ? 2 : 1, fw = wide_field ? 2 : 1;
    if (kw * n > stop - kidx) { err = "record truncated in the kind column"; goto done; }
    const uint8_t *fcol = kidx + kw * n;
    Py_ssize_t n_field = 0, n_inner = 0, n_explicit = 0, n_unexp = 0;
    uint8_t inner_unexp = 0;
    for (Py_ssize_t i = 0; i < n; i++) { /* branch-free counts */
        uint8_t o = op[i], c = o & HAS_CHILDREN;
        n_field += (o & HAS_FIELD) != 0;
        n_inner += c;
        n_explicit += (o & EXPLICIT) != 0;
        n_unexp += (o & UNEXPECTED) != 0;
        inner_unexp |= c & (o >> 7);
    }
    if (inner_unexp) { err = "UNEXPECTED on an internal node"; goto done; }
    size_t kmax = 0; /* every kind index in range, checked once rather than per node */
    if (wide_kind)
        for (Py_ssize_t i = 0; i < n; i++) {
            size_t k = (size_t)(kidx[2 * i] | kidx[2 * i + 1] << 8);
            kmax = k > kmax ? k : kmax;
        }
    else
        for (Py_ssize_t i = 0; i < n; i++) kmax = kidx[i] > kmax ? kidx[i] : kmax;
    if (kmax >= (size_t)kinds) { err = "kind index out of range"; goto done; }
    if (op[n - 1] & HAS_CHILDREN) { err = "last node has children"; goto done; }
    if (phantom_len < 0 || fw * n_field > stop - fcol ||
        phantom_len > stop - fcol - fw * n_field) { err = "record truncated in fields"; goto done; }
    const uint8_t *phant = fcol + fw * n_field;
    Reader r = {phant + phantom_len, stop};

    const Py_ssize_t widths[NCOLS] = {2, 2, 1, 2, 4, 4, 4, 8, 1, 4, 4, 4};
    if (source_len > UINT32_MAX) { err = "source length out of range"; goto done; }
    for (int k = 0; k < NCOLS; k++) {
        Py_ssize_t len = k == 7 ? 8 * n_unexp : k == 8 ? phantom_len : widths[k] * n;
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

    table = malloc(sizeof(uint16_t) * 2 * (size_t)kinds);
    /* open subtrees, their last child so far, and the index each one closes at */
    stack = malloc(sizeof(int32_t) * 2 * (size_t)n + sizeof(int64_t) * (size_t)n);
    if (!table || !stack) { PyErr_NoMemory(); err = "out of memory"; goto done; }
    int32_t *lastc = stack + n;
    int64_t *close_at = (int64_t *)(stack + 2 * n);
    for (Py_ssize_t k = 0; k < 2 * kinds; k++) {
        uint64_t v;
        if (read_varint(&r, &v)) { err = "varint block truncated"; goto done; }
        if (v >= (uint64_t)kind_limit && v != 0xFFFF) { err = "kind id out of range"; goto done; }
        table[k] = (uint16_t)v;
    }
    /* the streams, in block order */
    Py_ssize_t n_leaf = n - n_inner, n_explicit_leaf = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        n_explicit_leaf += (op[i] & (HAS_CHILDREN | EXPLICIT)) == EXPLICIT;
    Py_ssize_t n_exception = n_explicit - n_explicit_leaf;
    /* span exceptions (lead, tail) by ordinal: an internal node with one keeps its ordinal
     * in its end column until its subtree closes, so the exceptions need n_exception slots
     * rather than two more stacks of n */
    spans = malloc(sizeof(int64_t) * 2 * (size_t)(n_exception + 1));
    if (!spans) { PyErr_NoMemory(); err = "out of memory"; goto done; }
    Py_ssize_t xi = 0;
    const uint8_t *ps = r.p;
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
     * `last_end`); only a span exception can then leave it out of range */
#define CLOSE_SUBTREE(last_end) do {                                                  \
        int32_t j = stack[--sp];                                                      \
        int64_t e0 = (last_end);                                                      \
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
        uint16_t kd = table[2 * k];
        kind[i] = kd;
        gram[i] = table[2 * k + 1];
        flags[i] = o & (uint8_t)~EXPLICIT;
        /* branch-free field: the column is read one entry ahead (inside the record: the
         * varint block and the CRC follow it) and kept only when the node has a field */
        int has_field = (o & HAS_FIELD) != 0;
        uint16_t f = wide_field ? (uint16_t)(fcol[2 * fi] | fcol[2 * fi + 1] << 8) : fcol[fi];
        f = has_field ? f : 0;
        fi += has_field;
        field_bad |= f > field_limit;
        field[i] = f;
        /* close the subtrees that end before i: their last leaf is node i - 1 */
        while (sp && close_at[sp - 1] <= i) CLOSE_SUBTREE(end[i - 1]);
        child_count[i] = 0;
        if (sp) {
            int32_t p = stack[sp - 1];
            parent[i] = p;
            prev[i] = lastc[sp - 1];
            lastc[sp - 1] = (int32_t)i;
            child_count[p]++;
        } else if (i) {
            err = "more than one root"; goto done;
        } else {
            parent[i] = prev[i] = -1;
        }
        if (o & HAS_CHILDREN) {
            uint64_t v = take_varint(&ps, &bad);
            if (v > (uint64_t)(n - i - 2)) { err = "subtree size out of range"; goto done; }
            int64_t sz = (int64_t)v + 2;
            if (sp && i + sz > close_at[sp - 1]) { err = "subtree sizes do not nest"; goto done; }
            size[i] = (int32_t)sz;
            close_at[sp] = i + sz;
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
    while (sp) CLOSE_SUBTREE(end[n - 1]);
    if (span_bad) { err = "span exception out of range"; goto done; }
#undef CLOSE_SUBTREE
done:
    free(table);
    free(stack);
    free(spans);
    return err;
}

static PyObject *decode_body(PyObject *self, PyObject *args) {
    Py_buffer rec, tok;
    Py_ssize_t body, n, kinds, phantom_len;
    int wide_kind, wide_field;
    long long source_len;
    long kind_limit, field_limit;
    if (!PyArg_ParseTuple(args, "y*nnnppnLy*ll", &rec, &body, &n, &kinds, &wide_kind,
                          &wide_field, &phantom_len, &source_len, &tok, &kind_limit,
                          &field_limit))
        return NULL;
    PyObject *cols[NCOLS] = {0}, *result = NULL;
    const char *err = tok.len != 65536 * 2 ? "token table size" :
        decode_columns(rec.buf, rec.len, body, n, kinds, wide_kind, wide_field, phantom_len,
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

static PyObject *EncodeErr;

/* encode_body(kind u16, gram u16, flags u8, field u16, size i64, start i64, end i64,
 *             unexpected i64, token_len i16[65536], identity, phantoms, source_len, source_crc)
 * -> record body bytes */
static PyObject *encode_body(PyObject *self, PyObject *args) {
    Py_buffer b[9];
    const char *ident, *phant;
    Py_ssize_t ilen, plen;
    unsigned long long slen, scrc;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*y#y#KK", &b[0], &b[1], &b[2], &b[3], &b[4],
                          &b[5], &b[6], &b[7], &b[8], &ident, &ilen, &phant, &plen, &slen, &scrc))
        return NULL;
    const uint16_t *kind = b[0].buf, *gram = b[1].buf, *field = b[3].buf;
    const uint8_t *flags = b[2].buf;
    const int64_t *size = b[4].buf, *start = b[5].buf, *end = b[6].buf, *unexp = b[7].buf;
    const int16_t *token_len = b[8].buf;
    Py_ssize_t n = b[2].len, n_unexp = b[7].len / 8;
    PyObject *out = NULL;
    const char *err = NULL;
    uint8_t *mem = NULL, *op = NULL;
    int64_t *fls = NULL;
    uint16_t *map = NULL;
    uint32_t *alias = NULL; /* (kind << 16 | gram) of aliased pairs, first-appearance order */
    if (n <= 0 || b[0].len != 2 * n || b[1].len != 2 * n || b[3].len != 2 * n ||
        b[4].len != 8 * n || b[5].len != 8 * n || b[6].len != 8 * n || b[8].len != 65536 * 2 ||
        ilen > 255 || n > (Py_ssize_t)UINT32_MAX || slen > UINT32_MAX) {
        err = "column lengths disagree or out of range";
        goto done;
    }
    uint64_t present[1024];
    memset(present, 0, sizeof present);
    map = malloc(65536 * sizeof(uint16_t));
    size_t n_alias = 0, cap_alias = 0;
    op = malloc((size_t)n);
    fls = malloc(sizeof(int64_t) * (size_t)n);
    if (!map || !op || !fls) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (gram[i] == kind[i]) { present[kind[i] >> 6] |= 1ULL << (kind[i] & 63); continue; }
        uint32_t key = (uint32_t)kind[i] << 16 | gram[i];
        size_t k = 0;
        while (k < n_alias && alias[k] != key) k++;
        if (k == n_alias) {
            if (n_alias == cap_alias) {
                cap_alias = cap_alias ? 2 * cap_alias : 16;
                uint32_t *q = realloc(alias, cap_alias * sizeof(uint32_t));
                if (!q) { PyErr_NoMemory(); goto done; }
                alias = q;
            }
            alias[n_alias++] = key;
        }
    }
    size_t n_kinds = 0;
    for (int w = 0; w < 1024; w++)
        for (uint64_t bits = present[w]; bits; bits &= bits - 1) n_kinds++;
    size_t total_kinds = n_kinds + n_alias;
    if (total_kinds > 0xFFFF) { err = "too many distinct kinds"; goto done; }
    int wide_kind = total_kinds > 256;
    int wide_field = 0;
    Py_ssize_t n_field = 0, n_inner = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (flags[i] & HAS_FIELD) { n_field++; if (field[i] > 255) wide_field = 1; }
        if (size[i] > 1) n_inner++;
        if (size[i] < 1 || size[i] > n - i) { err = "subtree size out of range"; goto done; }
    }
    /* first leaf start of every node (reverse pass) and the opcodes */
    for (Py_ssize_t i = n - 1; i >= 0; i--) fls[i] = size[i] > 1 ? fls[i + 1] : start[i];
    int64_t prev_end = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t o = flags[i] & (uint8_t)~EXPLICIT;
        if (size[i] > 1) {
            o |= HAS_CHILDREN;
            if (fls[i] != start[i] || end[i + size[i] - 1] != end[i]) o |= EXPLICIT;
        } else {
            o &= (uint8_t)~HAS_CHILDREN;
            if (start[i] < prev_end || end[i] < start[i]) { err = "leaves overlap or run backwards"; goto done; }
            prev_end = end[i];
            if (end[i] - start[i] != token_len[kind[i]]) o |= EXPLICIT;
        }
        op[i] = o;
    }
    size_t bound = 25 + (size_t)ilen + (size_t)n * 5 + (size_t)plen +
                   10 * (2 * total_kinds + 2 * (size_t)n + 2 * (size_t)n_inner + (size_t)n_unexp);
    mem = malloc(bound);
    if (!mem) { PyErr_NoMemory(); goto done; }
    uint8_t *p = mem;
    memcpy(p, "CSTV", 4); p += 4;
    *p++ = 1;
    *p++ = (uint8_t)((wide_kind ? 1 : 0) | (wide_field ? 2 : 0));
    put_le(&p, (uint64_t)n, 4);
    put_le(&p, slen, 4);
    put_le(&p, scrc, 4);
    put_le(&p, total_kinds, 2);
    *p++ = (uint8_t)ilen;
    put_le(&p, (uint64_t)plen, 4);
    memcpy(p, ident, (size_t)ilen); p += ilen;
    memcpy(p, op, (size_t)n); p += n;
    /* kind table: plain kinds ascending, then aliased pairs */
    size_t idx = 0;
    uint32_t *table = malloc(sizeof(uint32_t) * (total_kinds ? total_kinds : 1));
    if (!table) { PyErr_NoMemory(); goto done; }
    for (int w = 0; w < 1024; w++)
        for (uint64_t bits = present[w]; bits; bits &= bits - 1) {
            uint32_t k = (uint32_t)(w * 64 + __builtin_ctzll(bits));
            map[k] = (uint16_t)idx;
            table[idx++] = k << 16 | k;
        }
    for (size_t k = 0; k < n_alias; k++) table[idx++] = alias[k];
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t k;
        if (gram[i] == kind[i]) k = map[kind[i]];
        else {
            uint32_t key = (uint32_t)kind[i] << 16 | gram[i];
            size_t a = 0;
            while (alias[a] != key) a++;
            k = (uint32_t)(n_kinds + a);
        }
        put_le(&p, k, wide_kind ? 2 : 1);
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (flags[i] & HAS_FIELD) put_le(&p, field[i], wide_field ? 2 : 1);
    memcpy(p, phant, (size_t)plen); p += plen;
    Writer w = {p};
    for (size_t k = 0; k < total_kinds; k++) { put_varint(&w, table[k] >> 16); put_varint(&w, table[k] & 0xFFFF); }
    free(table);
    for (Py_ssize_t i = 0; i < n; i++) if (size[i] > 1) put_varint(&w, (uint64_t)(size[i] - 2));
    prev_end = 0;
    for (Py_ssize_t i = 0; i < n; i++) if (size[i] == 1) { put_varint(&w, (uint64_t)(start[i] - prev_end)); prev_end = end[i]; }
    for (Py_ssize_t i = 0; i < n; i++) if (size[i] == 1 && (op[i] & EXPLICIT)) put_varint(&w, (uint64_t)(end[i] - start[i]));
    for (Py_ssize_t i = 0; i < n; i++)
        if (size[i] > 1 && (op[i] & EXPLICIT)) {
            put_varint(&w, zigzag64(fls[i] - start[i]));
            put_varint(&w, zigzag64(end[i] - end[i + size[i] - 1]));
        }
    for (Py_ssize_t k = 0; k < n_unexp; k++) put_varint(&w, zigzag64(unexp[k]));
    out = PyBytes_FromStringAndSize((const char *)mem, w.p - mem);
done:
    if (err && !PyErr_Occurred()) PyErr_SetString(EncodeErr, err);
    free(mem); free(op); free(fls); free(map); free(alias);
    for (int k = 0; k < 9; k++) if (b[k].obj) PyBuffer_Release(&b[k]);
    return out;
}


/* ---------------------------------------------------------------------------------------
 * Read API core: TreeBase (column pointers), NodeBase (flyweight), TreeCursor.
 * The Python classes cstvault.Tree / cstvault.Node subclass the first two.
 * ------------------------------------------------------------------------------------- */

#include "structmember.h"

typedef struct {
    PyObject_HEAD
    Py_buffer buf[10];
    int bound;
    Py_ssize_t n;
    const uint16_t *kind, *gram, *field;
    const uint8_t *flags;
    const int32_t *size;
    const uint32_t *start, *end;
    const int32_t *parent, *prev, *child_count;
    PyObject *names;       /* tuple: symbol id -> type name */
    PyObject *field_names; /* tuple: field id -> name or None */
    PyTypeObject *node_type;
    /* attributes of cstvault.Tree (None until set): see tree_members */
    PyObject *colcache, *decoded, *src, *lang_name, *structcache, *views, *lines, *lines_mv;
} TreeBase;

typedef struct {
    PyObject_HEAD
    TreeBase *tree;
    Py_ssize_t i;
} NodeBase;

static PyTypeObject TreeBaseType, NodeBaseType, CursorType;

static PyObject *make_node(TreeBase *t, Py_ssize_t i) {
    if (i < 0) Py_RETURN_NONE;
    NodeBase *n = (NodeBase *)t->node_type->tp_alloc(t->node_type, 0);
    if (!n) return NULL;
    Py_INCREF(t);
    n->tree = t;
    n->i = i;
    return (PyObject *)n;
}

static void tree_release(TreeBase *t) {
    for (int k = 0; k < 10; k++)
        if (t->buf[k].obj) PyBuffer_Release(&t->buf[k]);
    Py_CLEAR(t->names);
    Py_CLEAR(t->field_names);
    Py_CLEAR(t->node_type);
    t->bound = 0;
}

static int tree_traverse(TreeBase *t, visitproc visit, void *arg) {
    Py_VISIT(t->colcache); Py_VISIT(t->decoded); Py_VISIT(t->src); Py_VISIT(t->lang_name);
    Py_VISIT(t->structcache); Py_VISIT(t->views); Py_VISIT(t->lines); Py_VISIT(t->lines_mv);
    return 0;
}

static int tree_clear(TreeBase *t) {
    Py_CLEAR(t->colcache); Py_CLEAR(t->decoded); Py_CLEAR(t->src); Py_CLEAR(t->lang_name);
    Py_CLEAR(t->structcache); Py_CLEAR(t->views); Py_CLEAR(t->lines); Py_CLEAR(t->lines_mv);
    return 0;
}

/* A tree whose buffers held at least this much returns the heap it frees to the OS when it
 * dies. The cache trims after every few MB of trees admitted or evicted, but a tree larger
 * than the whole budget is evicted at once and then freed only when its user drops it,
 * which left its size in the heap until the next trim (glibc serves such buffers from the
 * heap once large frees have raised its mmap threshold). */
#define TRIM_ON_FREE (4 << 20)

static void tree_dealloc(TreeBase *t) {
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    Py_ssize_t held = 0;
    for (int k = 0; k < 10; k++) held += t->buf[k].len;
    tree_release(t);
    tree_clear(t);
    tp->tp_free((PyObject *)t); /* a Python subclass's subtype_dealloc drops the type ref */
#ifdef __GLIBC__
    if (held >= TRIM_ON_FREE) malloc_trim(0);
#endif
}

/* Bind ten column buffers (kind u16, grammar u16, flags u8, field u16, size i32, start u32,
 * end u32, parent i32, prev i32, child_count i32) and the name tables; 0, or -1 with an
 * exception set. */
static int bind_columns(TreeBase *t, PyObject *obj[10], PyObject *names, PyObject *fields,
                        PyObject *ntype) {
    if (!PyType_Check(ntype) || !PyType_IsSubtype((PyTypeObject *)ntype, &NodeBaseType)) {
        PyErr_SetString(PyExc_TypeError, "node_type must subclass NodeBase");
        return -1;
    }
    if (!PyTuple_Check(names) || !PyTuple_Check(fields) || PyTuple_GET_SIZE(names) < 1) {
        PyErr_SetString(PyExc_ValueError, "names must end with the ERROR name");
        return -1;
    }
    tree_release(t);
    static const int width[10] = {2, 2, 1, 2, 4, 4, 4, 4, 4, 4};
    for (int k = 0; k < 10; k++) {
        if (PyObject_GetBuffer(obj[k], &t->buf[k], PyBUF_C_CONTIGUOUS) < 0) { tree_release(t); return -1; }
    }
    Py_ssize_t n = t->buf[2].len;
    for (int k = 0; k < 10; k++) {
        if (t->buf[k].len != width[k] * n) {
            tree_release(t);
            PyErr_Format(PyExc_ValueError, "column %d has %zd bytes, expected %zd", k,
                         t->buf[k].len, width[k] * n);
            return -1;
        }
    }
    Py_ssize_t fcount = PyTuple_GET_SIZE(fields);
    const uint16_t *fld = t->buf[3].buf;
    for (Py_ssize_t i = 0; i < n; i++)
        if (fld[i] >= fcount) { tree_release(t); PyErr_SetString(PyExc_ValueError, "field id out of range"); return -1; }
    t->n = n;
    t->kind = t->buf[0].buf; t->gram = t->buf[1].buf; t->flags = t->buf[2].buf;
    t->field = fld; t->size = t->buf[4].buf; t->start = t->buf[5].buf; t->end = t->buf[6].buf;
    t->parent = t->buf[7].buf; t->prev = t->buf[8].buf; t->child_count = t->buf[9].buf;
    t->names = Py_NewRef(names);
    t->field_names = Py_NewRef(fields);
    t->node_type = (PyTypeObject *)Py_NewRef(ntype);
    t->bound = 1;
    return 0;
}

/* _bind(kind, grammar, flags, field, size, start, end, parent, prev, child_count,
 *       names, field_names, node_type) */
static PyObject *tree_bind(TreeBase *t, PyObject *args) {
    PyObject *obj[10], *names, *fields, *ntype;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOO", &obj[0], &obj[1], &obj[2], &obj[3], &obj[4],
                          &obj[5], &obj[6], &obj[7], &obj[8], &obj[9], &names, &fields, &ntype))
        return NULL;
    if (bind_columns(t, obj, names, fields, ntype) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *tree_len_get(TreeBase *t, void *c) { return PyLong_FromSsize_t(t->n); }
static PyObject *tree_names_get(TreeBase *t, void *c) { return Py_NewRef(t->names ? t->names : Py_None); }
static PyObject *tree_fields_get(TreeBase *t, void *c) { return Py_NewRef(t->field_names ? t->field_names : Py_None); }
static PyObject *tree_root_get(TreeBase *t, void *c) {
    if (!t->bound) { PyErr_SetString(PyExc_ValueError, "tree not bound"); return NULL; }
    return make_node(t, 0);
}

static PyObject *tree_node(TreeBase *t, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!t->bound || i < 0 || i >= t->n) { PyErr_SetString(PyExc_IndexError, "node index out of range"); return NULL; }
    return make_node(t, i);
}

static Py_ssize_t tree_length(TreeBase *t) { return t->n; }

static PyMethodDef tree_methods[] = {
    {"_bind", (PyCFunction)tree_bind, METH_VARARGS, "Bind column buffers (internal)."},
    {"node", (PyCFunction)tree_node, METH_O, "The node at a preorder index."},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef tree_getset[] = {
    {"root_node", (getter)tree_root_get, NULL, "The root node.", NULL},
    {"_names", (getter)tree_names_get, NULL, NULL, NULL},
    {"_field_names", (getter)tree_fields_get, NULL, NULL, NULL},
    {"_n", (getter)tree_len_get, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PySequenceMethods tree_seq = {.sq_length = (lenfunc)tree_length};
static PyMemberDef tree_members[] = {
    {"_colcache", T_OBJECT, offsetof(TreeBase, colcache), 0, NULL},
    {"_decoded", T_OBJECT, offsetof(TreeBase, decoded), 0, NULL},
    {"_src", T_OBJECT, offsetof(TreeBase, src), 0, NULL},
    {"_lang_name", T_OBJECT, offsetof(TreeBase, lang_name), 0, NULL},
    {"_structcache", T_OBJECT, offsetof(TreeBase, structcache), 0, NULL},
    {"_views", T_OBJECT, offsetof(TreeBase, views), 0, NULL},
    {"_lines", T_OBJECT, offsetof(TreeBase, lines), 0, NULL},
    {"_lines_mv", T_OBJECT, offsetof(TreeBase, lines_mv), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject TreeBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cstvault._native.TreeBase",
    .tp_basicsize = sizeof(TreeBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)tree_dealloc,
    .tp_traverse = (traverseproc)tree_traverse,
    .tp_clear = (inquiry)tree_clear,
    .tp_methods = tree_methods,
    .tp_members = tree_members,
    .tp_getset = tree_getset,
    .tp_as_sequence = &tree_seq,
};

/* --- nodes ---------------------------------------------------------------------------- */

static void node_dealloc(NodeBase *n) {
    PyTypeObject *tp = Py_TYPE(n);
    Py_XDECREF(n->tree);
    tp->tp_free((PyObject *)n); /* a Python subclass's subtype_dealloc drops the type ref */
}

#define T (n->tree)
#define I (n->i)
/* names[] holds one entry per symbol id below the ERROR symbol, then ERROR's */
static PyObject *name_of(TreeBase *t, uint16_t sym) {
    Py_ssize_t last = PyTuple_GET_SIZE(t->names) - 1;
    Py_ssize_t k = sym == ERROR_SYMBOL ? last : (sym < last ? (Py_ssize_t)sym : -1);
    if (k < 0) return PyUnicode_FromString("");
    return Py_NewRef(PyTuple_GET_ITEM(t->names, k));
}
static PyObject *node_type_get(NodeBase *n, void *c) { return name_of(T, T->kind[I]); }
static PyObject *node_grammar_name(NodeBase *n, void *c) { return name_of(T, T->gram[I]); }
static PyObject *node_kind_id(NodeBase *n, void *c) { return PyLong_FromLong(T->kind[I]); }
static PyObject *node_grammar_id(NodeBase *n, void *c) { return PyLong_FromLong(T->gram[I]); }
static PyObject *node_is_named(NodeBase *n, void *c) { return PyBool_FromLong(T->flags[I] & NAMED); }
static PyObject *node_is_extra(NodeBase *n, void *c) { return PyBool_FromLong(T->flags[I] & EXTRA); }
static PyObject *node_is_missing(NodeBase *n, void *c) { return PyBool_FromLong(T->flags[I] & MISSING); }
static PyObject *node_has_error(NodeBase *n, void *c) { return PyBool_FromLong(T->flags[I] & HAS_ERROR); }
static PyObject *node_is_error(NodeBase *n, void *c) { return PyBool_FromLong(T->kind[I] == ERROR_SYMBOL); }
static PyObject *node_start(NodeBase *n, void *c) { return PyLong_FromLongLong(T->start[I]); }
static PyObject *node_end(NodeBase *n, void *c) { return PyLong_FromLongLong(T->end[I]); }
static PyObject *node_byte_range(NodeBase *n, void *c) { return Py_BuildValue("(LL)", (long long)T->start[I], (long long)T->end[I]); }
static PyObject *node_descendants(NodeBase *n, void *c) { return PyLong_FromLongLong(T->size[I]); }
static PyObject *node_child_count(NodeBase *n, void *c) { return PyLong_FromLong(T->child_count[I]); }
static PyObject *node_id(NodeBase *n, void *c) { return PyLong_FromSsize_t(I); }
static PyObject *node_tree(NodeBase *n, void *c) { return Py_NewRef((PyObject *)T); }
static PyObject *node_parent(NodeBase *n, void *c) { return make_node(T, T->parent[I]); }
static PyObject *node_prev_sibling(NodeBase *n, void *c) { return make_node(T, T->prev[I]); }

static Py_ssize_t next_sibling_of(TreeBase *t, Py_ssize_t i) {
    int32_t p = t->parent[i];
    if (p < 0) return -1;
    Py_ssize_t j = i + t->size[i];
    return j < p + t->size[p] ? j : -1;
}
static PyObject *node_next_sibling(NodeBase *n, void *c) { return make_node(T, next_sibling_of(T, I)); }
static PyObject *node_next_named_sibling(NodeBase *n, void *c) {
    Py_ssize_t j = next_sibling_of(T, I);
    while (j >= 0 && !(T->flags[j] & NAMED)) j = next_sibling_of(T, j);
    return make_node(T, j);
}
static PyObject *node_prev_named_sibling(NodeBase *n, void *c) {
    Py_ssize_t j = T->prev[I];
    while (j >= 0 && !(T->flags[j] & NAMED)) j = T->prev[j];
    return make_node(T, j);
}

static PyObject *children_list(NodeBase *n, int named_only) {
    PyObject *list = PyList_New(0);
    if (!list || !(T->flags[I] & HAS_CHILDREN)) return list;
    Py_ssize_t end = I + T->size[I];
    for (Py_ssize_t j = I + 1; j < end; j += T->size[j]) {
        if (named_only && !(T->flags[j] & NAMED)) continue;
        PyObject *c = make_node(T, j);
        if (!c || PyList_Append(list, c) < 0) { Py_XDECREF(c); Py_DECREF(list); return NULL; }
        Py_DECREF(c);
    }
    return list;
}
static PyObject *node_children(NodeBase *n, void *c) { return children_list(n, 0); }
static PyObject *node_named_children(NodeBase *n, void *c) { return children_list(n, 1); }
static PyObject *node_named_child_count(NodeBase *n, void *c) {
    long k = 0;
    if (T->flags[I] & HAS_CHILDREN) {
        Py_ssize_t end = I + T->size[I];
        for (Py_ssize_t j = I + 1; j < end; j += T->size[j]) k += (T->flags[j] & NAMED) != 0;
    }
    return PyLong_FromLong(k);
}

static PyObject *node_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *tree;
    Py_ssize_t index;
    if (!PyArg_ParseTuple(args, "O!n", &TreeBaseType, &tree, &index)) return NULL;
    TreeBase *t = (TreeBase *)tree;
    if (!t->bound || index < 0 || index >= t->n) {
        PyErr_SetString(PyExc_IndexError, "node index out of range");
        return NULL;
    }
    NodeBase *n = (NodeBase *)type->tp_alloc(type, 0);
    if (!n) return NULL;
    n->tree = (TreeBase *)Py_NewRef(tree);
    n->i = index;
    return (PyObject *)n;
}

static Py_hash_t node_hash(NodeBase *n) {
    Py_hash_t h = (Py_hash_t)(((uintptr_t)T >> 4) * 1000003u) ^ (Py_hash_t)I;
    return h == -1 ? -2 : h;
}

static PyObject *node_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, &NodeBaseType) ||
        !PyObject_TypeCheck(a, &NodeBaseType))
        Py_RETURN_NOTIMPLEMENTED;
    NodeBase *x = (NodeBase *)a, *y = (NodeBase *)b;
    int eq = x->tree == y->tree && x->i == y->i;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}
#undef T
#undef I

static PyMemberDef node_members[] = {
    {"_i", T_PYSSIZET, offsetof(NodeBase, i), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef node_getset[] = {
    {"type", (getter)node_type_get, NULL, "The node's type.", NULL},
    {"grammar_name", (getter)node_grammar_name, NULL, NULL, NULL},
    {"kind_id", (getter)node_kind_id, NULL, NULL, NULL},
    {"grammar_id", (getter)node_grammar_id, NULL, NULL, NULL},
    {"is_named", (getter)node_is_named, NULL, NULL, NULL},
    {"is_extra", (getter)node_is_extra, NULL, NULL, NULL},
    {"is_missing", (getter)node_is_missing, NULL, NULL, NULL},
    {"is_error", (getter)node_is_error, NULL, NULL, NULL},
    {"has_error", (getter)node_has_error, NULL, NULL, NULL},
    {"start_byte", (getter)node_start, NULL, NULL, NULL},
    {"end_byte", (getter)node_end, NULL, NULL, NULL},
    {"byte_range", (getter)node_byte_range, NULL, NULL, NULL},
    {"descendant_count", (getter)node_descendants, NULL, NULL, NULL},
    {"child_count", (getter)node_child_count, NULL, NULL, NULL},
    {"named_child_count", (getter)node_named_child_count, NULL, NULL, NULL},
    {"children", (getter)node_children, NULL, NULL, NULL},
    {"named_children", (getter)node_named_children, NULL, NULL, NULL},
    {"parent", (getter)node_parent, NULL, NULL, NULL},
    {"next_sibling", (getter)node_next_sibling, NULL, NULL, NULL},
    {"prev_sibling", (getter)node_prev_sibling, NULL, NULL, NULL},
    {"next_named_sibling", (getter)node_next_named_sibling, NULL, NULL, NULL},
    {"prev_named_sibling", (getter)node_prev_named_sibling, NULL, NULL, NULL},
    {"id", (getter)node_id, NULL, NULL, NULL},
    {"_t", (getter)node_tree, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject NodeBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cstvault._native.NodeBase",
    .tp_basicsize = sizeof(NodeBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = node_new,
    .tp_dealloc = (destructor)node_dealloc,
    .tp_getset = node_getset,
    .tp_members = node_members,
    .tp_hash = (hashfunc)node_hash,
    .tp_richcompare = node_richcompare,
};

/* --- cursor --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    TreeBase *tree;
    Py_ssize_t root, i, sp, cap;
    Py_ssize_t *stack; /* ancestors of i below root (exclusive of i) */
} Cursor;

static int cursor_push(Cursor *c, Py_ssize_t v) {
    if (c->sp == c->cap) {
        Py_ssize_t cap = c->cap ? 2 * c->cap : 64;
        Py_ssize_t *q = PyMem_Realloc(c->stack, sizeof(Py_ssize_t) * (size_t)cap);
        if (!q) { PyErr_NoMemory(); return -1; }
        c->stack = q;
        c->cap = cap;
    }
    c->stack[c->sp++] = v;
    return 0;
}

/* Make `dst` stand where `src` stands (same tree): root, node and ancestor stack. */
static int cursor_assign(Cursor *dst, const Cursor *src) {
    dst->root = src->root;
    dst->i = src->i;
    dst->sp = 0;
    for (Py_ssize_t k = 0; k < src->sp; k++)
        if (cursor_push(dst, src->stack[k]) < 0) return -1;
    return 0;
}

static PyObject *cursor_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *tree;
    Py_ssize_t index = 0;
    if (!PyArg_ParseTuple(args, "O!|n", &TreeBaseType, &tree, &index)) return NULL;
    TreeBase *t = (TreeBase *)tree;
    if (!t->bound || index < 0 || index >= t->n) { PyErr_SetString(PyExc_IndexError, "node index out of range"); return NULL; }
    Cursor *c = (Cursor *)type->tp_alloc(type, 0);
    if (!c) return NULL;
    c->tree = (TreeBase *)Py_NewRef(tree);
    c->root = c->i = index;
    return (PyObject *)c;
}

static void cursor_dealloc(Cursor *c) {
    Py_XDECREF(c->tree);
    PyMem_Free(c->stack);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

#define CT (c->tree)
static PyObject *cursor_node(Cursor *c, void *x) { return make_node(CT, c->i); }
static PyObject *cursor_field_id(Cursor *c, void *x) {
    if (!c->sp || !CT->field[c->i]) Py_RETURN_NONE;
    return PyLong_FromLong(CT->field[c->i]);
}
static PyObject *cursor_field_name(Cursor *c, void *x) {
    if (!c->sp || !CT->field[c->i]) Py_RETURN_NONE;
    return Py_NewRef(PyTuple_GET_ITEM(CT->field_names, CT->field[c->i]));
}
static PyObject *cursor_depth(Cursor *c, void *x) { return PyLong_FromSsize_t(c->sp); }
static PyObject *cursor_descendant_index(Cursor *c, void *x) { return PyLong_FromSsize_t(c->i - c->root); }

static PyObject *cursor_first_child(Cursor *c, PyObject *u) {
    if (!(CT->flags[c->i] & HAS_CHILDREN)) Py_RETURN_FALSE;
    if (cursor_push(c, c->i) < 0) return NULL;
    c->i++;
    Py_RETURN_TRUE;
}
static PyObject *cursor_last_child(Cursor *c, PyObject *u) {
    Py_ssize_t i = c->i;
    if (!(CT->flags[i] & HAS_CHILDREN)) Py_RETURN_FALSE;
    Py_ssize_t end = i + CT->size[i], j = i + 1;
    while (j + CT->size[j] < end) j += CT->size[j];
    if (cursor_push(c, i) < 0) return NULL;
    c->i = j;
    Py_RETURN_TRUE;
}
static PyObject *cursor_next_sibling(Cursor *c, PyObject *u) {
    if (!c->sp) Py_RETURN_FALSE;
    Py_ssize_t p = c->stack[c->sp - 1], j = c->i + CT->size[c->i];
    if (j >= p + CT->size[p]) Py_RETURN_FALSE;
    c->i = j;
    Py_RETURN_TRUE;
}
static PyObject *cursor_prev_sibling(Cursor *c, PyObject *u) {
    if (!c->sp || CT->prev[c->i] < 0) Py_RETURN_FALSE;
    c->i = CT->prev[c->i];
    Py_RETURN_TRUE;
}
static PyObject *cursor_parent(Cursor *c, PyObject *u) {
    if (!c->sp) Py_RETURN_FALSE;
    c->i = c->stack[--c->sp];
    Py_RETURN_TRUE;
}
static PyObject *cursor_first_child_for_byte(Cursor *c, PyObject *arg) {
    long long byte = PyLong_AsLongLong(arg);
    if (byte == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t i = c->i;
    if (!(CT->flags[i] & HAS_CHILDREN)) Py_RETURN_NONE;
    Py_ssize_t end = i + CT->size[i], k = 0;
    for (Py_ssize_t j = i + 1; j < end; j += CT->size[j], k++) {
        if (CT->end[j] > byte) {
            if (cursor_push(c, i) < 0) return NULL;
            c->i = j;
            return PyLong_FromSsize_t(k);
        }
    }
    Py_RETURN_NONE;
}
static PyObject *cursor_goto_descendant(Cursor *c, PyObject *arg) {
    Py_ssize_t d = PyLong_AsSsize_t(arg);
    if (d == -1 && PyErr_Occurred()) return NULL;
    if (d < 0 || d >= CT->size[c->root]) { PyErr_SetString(PyExc_IndexError, "descendant index out of range"); return NULL; }
    Py_ssize_t target = c->root + d;
    c->i = c->root;
    c->sp = 0;
    while (c->i != target) {
        if (cursor_push(c, c->i) < 0) return NULL;
        c->i++;
        while (c->i + CT->size[c->i] <= target) c->i += CT->size[c->i];
    }
    Py_RETURN_NONE;
}
static PyObject *cursor_reset(Cursor *c, PyObject *arg) {
    if (!PyObject_TypeCheck(arg, &NodeBaseType) || ((NodeBase *)arg)->tree != CT) {
        PyErr_SetString(PyExc_ValueError, "reset() takes a node of the cursor's tree");
        return NULL;
    }
    c->root = c->i = ((NodeBase *)arg)->i;
    c->sp = 0;
    Py_RETURN_NONE;
}
static PyObject *cursor_copy(Cursor *c, PyObject *u) {
    Cursor *d = (Cursor *)Py_TYPE(c)->tp_alloc(Py_TYPE(c), 0);
    if (!d) return NULL;
    d->tree = (TreeBase *)Py_NewRef((PyObject *)CT);
    if (cursor_assign(d, c) < 0) { Py_DECREF(d); return NULL; }
    return (PyObject *)d;
}
static PyObject *cursor_reset_to(Cursor *c, PyObject *arg) {
    if (!PyObject_TypeCheck(arg, &CursorType) || ((Cursor *)arg)->tree != CT) {
        PyErr_SetString(PyExc_ValueError, "reset_to() takes a cursor of the same tree");
        return NULL;
    }
    if (cursor_assign(c, (Cursor *)arg) < 0) return NULL;
    Py_RETURN_NONE;
}
#undef CT

static PyMethodDef cursor_methods[] = {
    {"goto_first_child", (PyCFunction)cursor_first_child, METH_NOARGS, NULL},
    {"goto_last_child", (PyCFunction)cursor_last_child, METH_NOARGS, NULL},
    {"goto_next_sibling", (PyCFunction)cursor_next_sibling, METH_NOARGS, NULL},
    {"goto_previous_sibling", (PyCFunction)cursor_prev_sibling, METH_NOARGS, NULL},
    {"goto_parent", (PyCFunction)cursor_parent, METH_NOARGS, NULL},
    {"goto_first_child_for_byte", (PyCFunction)cursor_first_child_for_byte, METH_O, NULL},
    {"goto_descendant", (PyCFunction)cursor_goto_descendant, METH_O, NULL},
    {"reset", (PyCFunction)cursor_reset, METH_O, NULL},
    {"reset_to", (PyCFunction)cursor_reset_to, METH_O, NULL},
    {"copy", (PyCFunction)cursor_copy, METH_NOARGS, NULL},
    {"__copy__", (PyCFunction)cursor_copy, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef cursor_getset[] = {
    {"node", (getter)cursor_node, NULL, NULL, NULL},
    {"field_id", (getter)cursor_field_id, NULL, NULL, NULL},
    {"field_name", (getter)cursor_field_name, NULL, NULL, NULL},
    {"depth", (getter)cursor_depth, NULL, NULL, NULL},
    {"descendant_index", (getter)cursor_descendant_index, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyTypeObject CursorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cstvault.TreeCursor",
    .tp_basicsize = sizeof(Cursor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "TreeCursor(tree, index=0): a cursor rooted at a node, as in py-tree-sitter.",
    .tp_new = cursor_new,
    .tp_dealloc = (destructor)cursor_dealloc,
    .tp_methods = cursor_methods,
    .tp_getset = cursor_getset,
};

static PyObject *runtime_version(PyObject *self, PyObject *args) {
    return PyLong_FromLong(TREE_SITTER_LANGUAGE_VERSION);
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
static PyObject *path_hashes(PyObject *self, PyObject *arg) {
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
static inline uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t le16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline int64_t le64s(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return v; }

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
static PyObject *find_path(PyObject *self, PyObject *args) {
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

/* ---------------------------------------------------------------------------------------
 * open_tree: a record straight to a bound tree (the store's cold-open path), one call.
 * ------------------------------------------------------------------------------------- */

#define REC_HEAD 25 /* magic 4, version 1, flags 1, nodes 4, source len 4, source crc 4,
                       kinds 2, identity len 1, phantom len 4 (codec/bytecode.py) */

static PyObject *crc_func; /* crc32c.crc32c, given by set_crc32c */

static PyObject *set_crc32c(PyObject *self, PyObject *f) {
    Py_XSETREF(crc_func, Py_NewRef(f));
    Py_RETURN_NONE;
}


/* open_tree(cls, record, grammars) -> (tree, source_len, source_crc, buffer bytes), or None
 * when the record's grammar identity is not in `grammars` (bytes identity -> (language,
 * token_len int16[65536], kind_limit, field_limit, names, field_names, node_type)) or the
 * record has a phantom section: the caller then takes the general path. The checks are
 * codec.bytecode.read_header's, the record's CRC32C and decode_body's. */
static PyObject *open_tree(PyObject *self, PyObject *args) {
    PyObject *cls, *record, *grammars;
    if (!PyArg_ParseTuple(args, "O!SO!", &PyType_Type, &cls, &record, &PyDict_Type, &grammars))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)cls, &TreeBaseType)) {
        PyErr_SetString(PyExc_TypeError, "cls must subclass TreeBase");
        return NULL;
    }
    const uint8_t *buf = (const uint8_t *)PyBytes_AS_STRING(record);
    Py_ssize_t len = PyBytes_GET_SIZE(record);
    if (len < REC_HEAD + 4) return corrupt("record truncated: shorter than its header");
    if (memcmp(buf, "CSTV", 4)) return corrupt("not a cstvault record (bad magic)");
    if (buf[4] != 1) return PyErr_Format(Corrupt, "unsupported record format version %d", buf[4]);
    uint8_t hflags = buf[5];
    if (hflags & ~3) return corrupt("unknown header flags");
    uint32_t n = le32(buf + 6), slen = le32(buf + 10), scrc = le32(buf + 14);
    uint16_t kinds = (uint16_t)(buf[18] | buf[19] << 8);
    uint8_t ilen = buf[20];
    uint32_t plen = le32(buf + 21);
    Py_ssize_t body = REC_HEAD + ilen;
    if (n == 0 || body + (Py_ssize_t)n > len || kinds == 0 || kinds > n)
        return corrupt("record truncated or node count out of range");
    for (int k = 0; k < ilen; k++)
        if (buf[REC_HEAD + k] >= 0x80) return corrupt("grammar identity is not ASCII");
    if (!crc_func) { PyErr_SetString(PyExc_RuntimeError, "set_crc32c was not called"); return NULL; }
    PyObject *mv = PyMemoryView_FromMemory((char *)buf, len - 4, PyBUF_READ);
    if (!mv) return NULL;
    PyObject *crc = PyObject_CallOneArg(crc_func, mv);
    Py_DECREF(mv);
    if (!crc) return NULL;
    unsigned long got = PyLong_AsUnsignedLong(crc);
    Py_DECREF(crc);
    if (got == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (got != le32(buf + len - 4)) return corrupt("record checksum (CRC32C) mismatch");
    if (plen) Py_RETURN_NONE;
    PyObject *ident = PyBytes_FromStringAndSize((const char *)buf + REC_HEAD, ilen);
    if (!ident) return NULL;
    PyObject *g = PyDict_GetItemWithError(grammars, ident); /* borrowed */
    Py_DECREF(ident);
    if (!g) { if (PyErr_Occurred()) return NULL; Py_RETURN_NONE; }
    if (!PyTuple_Check(g) || PyTuple_GET_SIZE(g) != 7) {
        PyErr_SetString(PyExc_TypeError, "grammars values are 7-tuples");
        return NULL;
    }
    long kind_limit = PyLong_AsLong(PyTuple_GET_ITEM(g, 2));
    long field_limit = PyLong_AsLong(PyTuple_GET_ITEM(g, 3));
    if (PyErr_Occurred()) return NULL;
    Py_buffer tok;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(g, 1), &tok, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    PyObject *cols[NCOLS] = {0}, *out = NULL, *decoded = NULL, *result = NULL;
    TreeBase *t = NULL;
    const char *err = tok.len != 65536 * 2 ? "token table size" :
        decode_columns(buf, len, body, n, kinds, hflags & 1, (hflags >> 1) & 1, 0, slen,
                       tok.buf, kind_limit, field_limit, cols);
    PyBuffer_Release(&tok);
    if (err) { if (!PyErr_Occurred()) corrupt(err); goto done; }
    out = PyTuple_New(NCOLS);
    if (!out) goto done;
    Py_ssize_t nbytes = 0;
    for (int k = 0; k < NCOLS; k++) {
        if (k != 8) nbytes += PyBytes_GET_SIZE(cols[k]);
        PyTuple_SET_ITEM(out, k, cols[k]);
        cols[k] = NULL;
    }
    t = (TreeBase *)((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, 0);
    if (!t) goto done;
    PyObject *bufs[10];
    for (int k = 0; k < 7; k++) bufs[k] = PyTuple_GET_ITEM(out, k);
    for (int k = 0; k < 3; k++) bufs[7 + k] = PyTuple_GET_ITEM(out, 9 + k);
    if (bind_columns(t, bufs, PyTuple_GET_ITEM(g, 4), PyTuple_GET_ITEM(g, 5),
                     PyTuple_GET_ITEM(g, 6)) < 0)
        goto done;
    PyObject *empty = PyTuple_New(0);
    decoded = empty ? PyTuple_Pack(3, PyTuple_GET_ITEM(g, 0), out, empty) : NULL;
    Py_XDECREF(empty);
    if (!decoded) goto done;
    t->decoded = Py_NewRef(decoded);
    t->lang_name = Py_NewRef(PyTuple_GET_ITEM(g, 0));
    result = Py_BuildValue("(Okkn)", (PyObject *)t, (unsigned long)slen, (unsigned long)scrc, nbytes);
done:
    for (int k = 0; k < NCOLS; k++) Py_XDECREF(cols[k]);
    Py_XDECREF(out);
    Py_XDECREF(decoded);
    Py_XDECREF((PyObject *)t);
    return result;
}

static PyMethodDef methods[] = {
    {"set_crc32c", set_crc32c, METH_O, "The CRC32C function open_tree checks records with."},
    {"open_tree", open_tree, METH_VARARGS,
     "open_tree(cls, record, grammars) -> (tree, source_len, source_crc, nbytes) or None"},
    {"path_hashes", path_hashes, METH_O, "path_hashes(paths) -> uint64 FNV-1a of each UTF-8 path"},
    {"find_path", find_path, METH_VARARGS,
     "find_path(index, counter, path, blob_cls, languages, fd) -> (BlobRow, (size, mtime)), "
     "None (not stored) or False (ask the catalog)"},
    {"distinct_slices", distinct_slices, METH_VARARGS,
     "distinct_slices(source, starts int64, ends int64, max_len) -> set of bytes"},
    {"parse_extract", parse_extract, METH_VARARGS,
     "parse_extract(source, language_capsule) -> (n, kind, grammar, flags, field, size, "
     "start, end, unexpected, sexp_or_None)"},
    {"language_abi", runtime_version, METH_NOARGS, "Newest grammar ABI the runtime reads."},
    {"encode_body", encode_body, METH_VARARGS, "Encode columns as a record body."},
    {"decode_body", decode_body, METH_VARARGS, "Decode a record body (see bytecode.decode)."},
    {"structure", py_structure, METH_VARARGS,
     "structure(size int64 buffer) -> (parent, prev, child_count, depth) int32 bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m || PyModule_AddFunctions(m, query_methods) < 0) return NULL;
    ts_set_allocator(PyMem_Malloc, PyMem_Calloc, PyMem_Realloc, PyMem_Free);
    Corrupt = PyErr_NewException("cstvault._native.CorruptRecord", PyExc_ValueError, NULL);
    if (!Corrupt || PyModule_AddObjectRef(m, "CorruptRecord", Corrupt) < 0) return NULL;
    if (PyType_Ready(&TreeBaseType) < 0 || PyType_Ready(&NodeBaseType) < 0 ||
        PyType_Ready(&CursorType) < 0)
        return NULL;
    if (PyModule_AddObjectRef(m, "TreeBase", (PyObject *)&TreeBaseType) < 0 ||
        PyModule_AddObjectRef(m, "NodeBase", (PyObject *)&NodeBaseType) < 0 ||
        PyModule_AddObjectRef(m, "TreeCursor", (PyObject *)&CursorType) < 0)
        return NULL;
    EncodeErr = PyErr_NewException("cstvault._native.EncodeError", PyExc_ValueError, NULL);
    if (!EncodeErr || PyModule_AddObjectRef(m, "EncodeError", EncodeErr) < 0) return NULL;
    return m;
}
