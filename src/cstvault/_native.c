/* cstvault._native: parse + extract in tree-sitter's C.
 *
 * parse_extract(source, language_capsule) parses `source` with the tree-sitter runtime
 * (the same pinned release py-tree-sitter wraps) and walks the tree once with a
 * TSTreeCursor, filling the column buffers that cstvault.extract documents.  No Python
 * object is created per node.  The GIL is released while parsing and walking.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#include "tree_sitter/api.h"
/* Internal headers of the pinned runtime we compile in: used only to look for hidden
 * MISSING tokens, which the public API cannot enumerate. */
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
    uint32_t *stack;
    size_t sp, stack_cap;
    int64_t *unexpected;
    size_t n_unexpected, unexpected_cap;
} Columns;

static void columns_free(Columns *c) {
    free(c->kind); free(c->gram); free(c->field); free(c->flags);
    free(c->size); free(c->start); free(c->end); free(c->stack); free(c->unexpected);
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
    free(s);
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

/* Walk the whole tree; returns 0, or -1 on allocation failure. */
static int walk(TSTree *tree, Columns *c, int has_errors) {
    TSNode root = ts_tree_root_node(tree);
    if (columns_reserve(c, ts_node_descendant_count(root))) return -1;
    TSTreeCursor cur = ts_tree_cursor_new(root);
    int rc = 0;
    for (;;) {
        if (c->n == c->cap && columns_reserve(c, c->cap * 2)) { rc = -1; break; }
        size_t i = c->n++;
        TSNode n = ts_tree_cursor_current_node(&cur);
        TSSymbol kind = ts_node_symbol(n);
        uint8_t fl = ts_node_is_named(n) ? NAMED : 0;
        if (ts_node_is_extra(n)) fl |= EXTRA;
        TSFieldId fid = ts_tree_cursor_current_field_id(&cur);
        if (fid) fl |= HAS_FIELD;
        c->kind[i] = kind;
        c->gram[i] = ts_node_grammar_symbol(n);
        c->field[i] = fid;
        c->start[i] = ts_node_start_byte(n);
        c->end[i] = ts_node_end_byte(n);
        c->size[i] = 1;
        if (has_errors) {
            if (ts_node_is_missing(n)) fl |= MISSING;
            if (ts_node_has_error(n)) fl |= HAS_ERROR;
            int64_t ch;
            if (kind == ERROR_SYMBOL && ts_node_child_count(n) == 0 && unexpected_char(n, &ch)) {
                if (c->n_unexpected == c->unexpected_cap) {
                    size_t cap = c->unexpected_cap ? c->unexpected_cap * 2 : 16;
                    if (grow((void **)&c->unexpected, 8, cap)) { rc = -1; break; }
                    c->unexpected_cap = cap;
                }
                c->unexpected[c->n_unexpected++] = ch;
                fl |= UNEXPECTED;
            }
        }
        c->flags[i] = fl;
        if (ts_tree_cursor_goto_first_child(&cur)) {
            c->flags[i] |= HAS_CHILDREN;
            if (c->sp == c->stack_cap) {
                size_t cap = c->stack_cap ? c->stack_cap * 2 : 256;
                if (grow((void **)&c->stack, 4, cap)) { rc = -1; break; }
                c->stack_cap = cap;
            }
            c->stack[c->sp++] = (uint32_t)i;
            continue;
        }
        int done = 0;
        while (!ts_tree_cursor_goto_next_sibling(&cur)) {
            if (!ts_tree_cursor_goto_parent(&cur)) { done = 1; break; }
            uint32_t j = c->stack[--c->sp];
            c->size[j] = (uint32_t)(c->n - j);
        }
        if (done) break;
    }
    ts_tree_cursor_delete(&cur);
    return rc;
}

/* A small pool of parsers, taken and returned while holding the GIL. */
#define POOL 32
static struct { const TSLanguage *lang; TSParser *parser; } pool[POOL];
static int pool_size = 0;

static TSParser *take_parser(const TSLanguage *lang) {
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

static void give_parser(const TSLanguage *lang, TSParser *p) {
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
    Py_BEGIN_ALLOW_THREADS
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
    Py_END_ALLOW_THREADS
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
    if (rc) { columns_free(&c); free(sexp); return PyErr_NoMemory(); }
    PyObject *text = sexp ? PyUnicode_DecodeUTF8(sexp, strlen(sexp), "surrogateescape") : Py_NewRef(Py_None);
    free(sexp);
    PyObject *out = text ? Py_BuildValue(
        "(nNNNNNNNNN)", (Py_ssize_t)c.n,
        bytes_of(c.kind, 2 * c.n), bytes_of(c.gram, 2 * c.n), bytes_of(c.flags, c.n),
        bytes_of(c.field, 2 * c.n), bytes_of(c.size, 4 * c.n), bytes_of(c.start, 4 * c.n),
        bytes_of(c.end, 4 * c.n), bytes_of(c.unexpected, 8 * c.n_unexpected), text) : NULL;
    columns_free(&c);
    return out;
}

static PyObject *runtime_version(PyObject *self, PyObject *args) {
    return PyLong_FromLong(TREE_SITTER_LANGUAGE_VERSION);
}

static PyMethodDef methods[] = {
    {"parse_extract", parse_extract, METH_VARARGS,
     "parse_extract(source, language_capsule) -> (n, kind, grammar, flags, field, size, "
     "start, end, unexpected, sexp_or_None)"},
    {"language_abi", runtime_version, METH_NOARGS, "Newest grammar ABI the runtime reads."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", NULL, -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
