/* cstvault._native, extraction: parse + one walk over the runtime's subtrees -> columns. */
#include "native.h"

/* Internal headers of the pinned runtime we compile in: the extraction walks subtrees
 * directly, and looks for hidden MISSING tokens, which the public API cannot enumerate. */
#include "language.h"
#include "subtree.h"
#include "tree.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

/* A parse of a source this large gives the tree's freed heap back to the OS (malloc_trim)
 * before its columns become Python objects: glibc would keep it, and a large file's peak
 * would be its tree plus every array made after it. */
#define TRIM_AFTER (256 * 1024) /* sources.LARGE_FILE_BYTES */

typedef struct {
    size_t n, cap;
    uint16_t *kind, *gram, *field;
    uint8_t *flags;
    uint32_t *size, *start, *end;
    int64_t *unexpected;
    size_t n_unexpected, unexpected_cap;
    uint32_t *status; /* (node, field << 2 | inherits << 1 | later) pairs: see node_status */
    size_t n_status, status_cap;
    uint32_t *tails;  /* (node, end) pairs: see the walk's hidden-group tails */
    size_t n_tails, tails_cap;
} Columns;

static void columns_free(Columns *c) {
    free(c->kind); free(c->gram); free(c->field); free(c->flags);
    free(c->size); free(c->start); free(c->end); free(c->unexpected);
    free(c->status); free(c->tails);
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
    PyMem_RawFree(s); /* allocated by the runtime's allocator (see PyInit__native) */
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
    uint32_t at;         /* the parent's structural index in the frame below */
    int extra;           /* the parent is an extra */
    int64_t last;        /* the last visible node emitted at this visible level, or -1 */
} Frame;

static int frame_push(Frame **stack, size_t *sp, size_t *cap, const TSLanguage *lang,
                      Subtree s, uint32_t pos, TSFieldId chain, int64_t out, uint32_t at) {
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
    f->at = at;
    f->extra = ts_subtree_extra(s);
    f->last = -1;
    return 0;
}

/* An invisible subtree with visible children (a "group", transparent in the visible tree)
 * may end after its last visible child: hidden tokens (newlines, terminators) close it.
 * ts_tree_cursor_goto_first_child_for_byte / _for_point descend into a group whose end is
 * past the goal and fail when none of its visible children is, so a goal in such a tail
 * gets no child, where the visible tree alone would offer the next one. Kept as (the last
 * visible child, the group's end), the largest end per child. */
/* Append (a, b) to a growable u32 pair array; 0, or -1 on allocation failure. */
static int pair_push(uint32_t **v, size_t *n, size_t *cap, uint32_t a, uint32_t b) {
    if (*n + 2 > *cap) {
        size_t k = *cap ? 2 * *cap : 64;
        if (grow((void **)v, 4, k)) return -1;
        *cap = k;
    }
    (*v)[(*n)++] = a;
    (*v)[(*n)++] = b;
    return 0;
}

static int tail_push(Columns *c, uint32_t node, uint32_t end) {
    if (c->n_tails && c->tails[c->n_tails - 2] == node) { /* an outer group of the same child */
        if (end > c->tails[c->n_tails - 1]) c->tails[c->n_tails - 1] = end;
        return 0;
    }
    return pair_push(&c->tails, &c->n_tails, &c->tails_cap, node, end);
}

static int pair_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* What ts_tree_cursor_current_status reports of the child being visited at the top frame
 * (structural index `at`, `extra`) and that tree-sitter's query cursor uses, which the
 * stored field does not carry: the field walking up through invisible parents, which for an
 * extra inside an invisible parent with a field differs from the stored one (0), and
 * whether a later sibling can have that field (from the productions' field maps, so not
 * derivable from the visible tree), and whether its parent's field map inherits fields
 * through it. Returns field << 2 | inherits << 1 | can-have-later. */
static uint32_t node_status(const Frame *stack, size_t sp, uint32_t at, int extra) {
    TSFieldId fid = 0;
    int later = 0, inherits = 0;
    if (!extra) /* its subtree parent's field map passes fields up through it (a rule that was
                 * hidden): ts_node_child_by_field_id searches it for a field */
        for (const TSFieldMapEntry *m = stack[sp - 1].fmap; m < stack[sp - 1].fmap_end; m++)
            if (m->inherited && m->child_index == at) { inherits = 1; break; }
    for (size_t k = sp; k-- > 0;) {
        const Frame *f = &stack[k];
        if (k + 1 < sp) { /* the level of an invisible ancestor: the entry is stack[k + 1]'s parent */
            if (stack[k + 1].out >= 0) break;
            at = stack[k + 1].at;
            extra = stack[k + 1].extra;
        }
        if (extra) continue;
        if (!fid)
            for (const TSFieldMapEntry *m = f->fmap; m < f->fmap_end; m++)
                if (!m->inherited && m->child_index == at) { fid = m->field_id; break; }
        if (fid && !later)
            for (const TSFieldMapEntry *m = f->fmap; m < f->fmap_end; m++)
                if (m->field_id == fid && m->child_index > at) { later = 1; break; }
    }
    return (uint32_t)fid << 2 | (uint32_t)inherits << 1 | (uint32_t)later;
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
    if (frame_push(&stack, &sp, &cap, lang, tree->root, start, 0, 0, 0)) return -1;
    int rc = 0;
    while (sp) {
        Frame *f = &stack[sp - 1];
        uint32_t count = f->parent.ptr->child_count;
        if (f->child == count) {
            if (f->out >= 0) {
                size_t j = (size_t)f->out;
                c->size[j] = (uint32_t)(c->n - j);
                if (c->n - j > 1) c->flags[j] |= HAS_CHILDREN;
            } else if (f->last >= 0) { /* a group closes: its tail, and its last child */
                if (f->pos > c->end[f->last] && tail_push(c, (uint32_t)f->last, f->pos)) { rc = -1; break; }
                if (sp > 1) stack[sp - 2].last = f->last;
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
        uint32_t at_index = f->structural;
        int is_extra = ts_subtree_extra(ch);
        if (!is_extra) {
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
            f->last = i;
            uint32_t st = i < 0 ? 0 : node_status(stack, sp, at_index, is_extra);
            if (i < 0 || ((st & 3 || st >> 2 != fid) && pair_push(&c->status, &c->n_status, &c->status_cap, (uint32_t)i, st)) ||
                (kids && frame_push(&stack, &sp, &cap, lang, ch, at, 0, i, at_index))) {
                rc = -1;
                break;
            }
        } else if (kids && ch.ptr->visible_child_count > 0) {
            if (frame_push(&stack, &sp, &cap, lang, ch, at, fid, -1, at_index)) { rc = -1; break; }
        }
    }
    free(stack);
    if (rc == 0 && c->n_tails) qsort(c->tails, c->n_tails / 2, 2 * sizeof(uint32_t), pair_cmp);
    return rc;
}

static PyObject *bytes_of(const void *p, size_t len) {
    return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
}

/* What extraction makes of a parsed tree, in C memory only (no Python object, so it runs
 * without the GIL): the columns, the query's matches as record events, and the tree's
 * S-expression when hidden MISSING tokens need it. 0, or -1 when out of memory (all freed). */
typedef struct {
    Columns c;
    Ints ev;
    char *sexp;
} Extracted;

static void extracted_free(Extracted *x) {
    columns_free(&x->c);
    ints_free(&x->ev);
    PyMem_RawFree(x->sexp);
}

static int extract_c(TSTree *tree, const TSQuery *query, Extracted *x) {
    memset(x, 0, sizeof *x);
    int has_errors = ts_node_has_error(ts_tree_root_node(tree));
    int rc = walk(tree, &x->c, has_errors);
    if (rc == 0 && query) rc = query_records(query, ts_tree_root_node(tree), &x->ev);
    if (has_errors && rc == 0) {
        int hidden = has_hidden_missing(tree);
        if (hidden < 0) rc = -1;
        else if (hidden && !(x->sexp = ts_node_string(ts_tree_root_node(tree)))) rc = -1;
    }
    if (rc) extracted_free(x);
    return rc;
}

/* The tuple parse_extract returns, from an extraction (freed here). */
static PyObject *extracted_tuple(Extracted *x, int with_query) {
    Columns *c = &x->c;
    PyObject *text = x->sexp ? PyUnicode_DecodeUTF8(x->sexp, strlen(x->sexp), "surrogateescape")
                             : Py_NewRef(Py_None);
    PyObject *out = text ? Py_BuildValue(
        "(nNNNNNNNNNNN)", (Py_ssize_t)c->n,
        bytes_of(c->kind, 2 * c->n), bytes_of(c->gram, 2 * c->n), bytes_of(c->flags, c->n),
        bytes_of(c->field, 2 * c->n), bytes_of(c->size, 4 * c->n), bytes_of(c->start, 4 * c->n),
        bytes_of(c->end, 4 * c->n), bytes_of(c->unexpected, 8 * c->n_unexpected), text,
        bytes_of(c->status, 4 * c->n_status), bytes_of(c->tails, 4 * c->n_tails)) : NULL;
    if (out && with_query) /* with a query: (columns, its matches as query_exec's record events) */
        out = Py_BuildValue("(NN)", out, bytes_of(x->ev.v, x->ev.n * sizeof(int32_t)));
    extracted_free(x);
    return out;
}

/* A parsed tree's columns (and, with a query, its matches as record events): the tuple
 * parse_extract returns. The tree is only read. */
PyObject *extract_tree(TSTree *tree, const TSQuery *query) {
    Extracted x;
    if (extract_c(tree, query, &x)) return PyErr_NoMemory();
    return extracted_tuple(&x, query != NULL);
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

/* A pooled parser for `lang`, or NULL with ValueError set (a source over 4 GiB, or a grammar
 * whose ABI the runtime cannot read); `src` is released on failure. */
static TSParser *parser_for(const TSLanguage *lang, Py_buffer *src) {
    if (src->len > (Py_ssize_t)UINT32_MAX) {
        PyBuffer_Release(src);
        PyErr_SetString(PyExc_ValueError, "source larger than 4 GiB");
        return NULL;
    }
    TSParser *parser = take_parser(lang);
    if (!parser) {
        PyBuffer_Release(src);
        PyErr_SetString(PyExc_ValueError, "incompatible grammar ABI for this tree-sitter runtime");
    }
    return parser;
}

/* Parse `src` (a Python buffer, released here) with a pooled parser for `lang`, reusing the
 * edited `old` tree when given; NULL with an exception set on failure. */
TSTree *parse_buffer(const TSLanguage *lang, Py_buffer *src, const TSTree *old) {
    TSParser *parser = parser_for(lang, src);
    if (!parser) return NULL;
    TSTree *tree = ts_parser_parse_string(parser, old, src->buf, (uint32_t)src->len);
    ts_parser_reset(parser);
    give_parser(lang, parser);
    PyBuffer_Release(src);
    if (!tree) PyErr_SetString(PyExc_RuntimeError, "parse failed");
    return tree;
}

/* parse_extract(source, language capsule, query capsule=None): parse and extract without
 * the GIL (the source buffer is held; parser pool and Python objects with the GIL), so
 * threads parse in parallel. */
PyObject *parse_extract(PyObject *self, PyObject *args) {
    Py_buffer src;
    PyObject *capsule, *qcap = Py_None;
    if (!PyArg_ParseTuple(args, "y*O|O", &src, &capsule, &qcap)) return NULL;
    const TSLanguage *lang = PyCapsule_GetPointer(capsule, "tree_sitter.Language");
    const TSQuery *query = lang && qcap != Py_None ? query_of(qcap) : NULL;
    if (!lang || (qcap != Py_None && !query)) { PyBuffer_Release(&src); return NULL; }
    TSParser *parser = parser_for(lang, &src);
    if (!parser) return NULL;
    Extracted x;
    int rc = -1;
    TSTree *tree;
    Py_BEGIN_ALLOW_THREADS
    tree = ts_parser_parse_string(parser, NULL, src.buf, (uint32_t)src.len);
    ts_parser_reset(parser);
    if (tree) {
        rc = extract_c(tree, query, &x);
        ts_tree_delete(tree);
#ifdef __GLIBC__
        if (src.len >= TRIM_AFTER) malloc_trim(0);
#endif
    }
    Py_END_ALLOW_THREADS
    give_parser(lang, parser);
    PyBuffer_Release(&src);
    if (!tree) { PyErr_SetString(PyExc_RuntimeError, "parse failed"); return NULL; }
    if (rc) return PyErr_NoMemory();
    return extracted_tuple(&x, query != NULL);
}
