/* cstvault._native, queries: tree-sitter's own query engine run over a stored tree.
 *
 * A stored tree is not a TSTree, and tree-sitter's matcher walks the runtime's internal
 * subtrees, so a query re-parses the tree's source with the same pinned runtime and grammar
 * (which yields the same tree: the round-trip gate) and runs ts_query_cursor on it. Each
 * captured node is then named by its preorder index, which is also its index in the stored
 * tree: the stored columns are tree-sitter's cursor order. Matching, quantifiers, anchors,
 * fields, supertypes and ranges are therefore tree-sitter's; text predicates are evaluated
 * by cstvault.query, as py-tree-sitter evaluates them.
 */
#include "native.h"

#include <stdint.h>
#include <string.h>


static void query_free(PyObject *capsule) {
    TSQuery *q = PyCapsule_GetPointer(capsule, QUERY_CAPSULE);
    if (q) ts_query_delete(q);
}

TSQuery *query_of(PyObject *capsule) { return PyCapsule_GetPointer(capsule, QUERY_CAPSULE); }

/* query_new(language_capsule, source) -> query capsule, or (error kind, byte offset) */
static PyObject *query_new(PyObject *self, PyObject *args) {
    PyObject *capsule;
    Py_buffer src;
    if (!PyArg_ParseTuple(args, "Oy*", &capsule, &src)) return NULL;
    const TSLanguage *lang = PyCapsule_GetPointer(capsule, "tree_sitter.Language");
    if (!lang || src.len > (Py_ssize_t)UINT32_MAX) {
        PyBuffer_Release(&src);
        if (lang) PyErr_SetString(PyExc_ValueError, "query larger than 4 GiB");
        return NULL;
    }
    uint32_t offset = 0;
    TSQueryError error = TSQueryErrorNone;
    TSQuery *q = ts_query_new(lang, src.buf, (uint32_t)src.len, &offset, &error);
    PyBuffer_Release(&src);
    if (!q) return Py_BuildValue("(iI)", (int)error, offset);
    PyObject *out = PyCapsule_New(q, QUERY_CAPSULE, query_free);
    if (!out) ts_query_delete(q);
    return out;
}

/* query_info(query) -> (capture names, string values, patterns, quantifiers): a pattern is
 * (start byte, end byte, rooted, non-local, predicate steps as (type, id) pairs); the
 * quantifiers are, per pattern, one TSQuantifier per capture id. */
static PyObject *query_info(PyObject *self, PyObject *capsule) {
    TSQuery *q = query_of(capsule);
    if (!q) return NULL;
    uint32_t nc = ts_query_capture_count(q), ns = ts_query_string_count(q);
    uint32_t np = ts_query_pattern_count(q), len;
    PyObject *names = PyList_New(nc), *strings = PyList_New(ns), *patterns = PyList_New(np);
    PyObject *quants = PyList_New(np);
    if (!names || !strings || !patterns || !quants) goto fail;
    for (uint32_t i = 0; i < nc; i++) {
        const char *s = ts_query_capture_name_for_id(q, i, &len);
        PyObject *v = PyUnicode_DecodeUTF8(s, len, "surrogateescape");
        if (!v) goto fail;
        PyList_SET_ITEM(names, i, v);
    }
    for (uint32_t i = 0; i < ns; i++) {
        const char *s = ts_query_string_value_for_id(q, i, &len);
        PyObject *v = PyBytes_FromStringAndSize(s, len);
        if (!v) goto fail;
        PyList_SET_ITEM(strings, i, v);
    }
    for (uint32_t p = 0; p < np; p++) {
        uint32_t nsteps;
        const TSQueryPredicateStep *st = ts_query_predicates_for_pattern(q, p, &nsteps);
        PyObject *steps = PyList_New(nsteps), *qs = PyList_New(nc);
        if (!steps || !qs) { Py_XDECREF(steps); Py_XDECREF(qs); goto fail; }
        for (uint32_t k = 0; k < nsteps; k++)
            PyList_SET_ITEM(steps, k, Py_BuildValue("(iI)", (int)st[k].type, st[k].value_id));
        for (uint32_t c = 0; c < nc; c++)
            PyList_SET_ITEM(qs, c, PyLong_FromLong(ts_query_capture_quantifier_for_id(q, p, c)));
        PyObject *pat = Py_BuildValue("(IIOON)", ts_query_start_byte_for_pattern(q, p),
                                      ts_query_end_byte_for_pattern(q, p),
                                      ts_query_is_pattern_rooted(q, p) ? Py_True : Py_False,
                                      ts_query_is_pattern_non_local(q, p) ? Py_True : Py_False,
                                      steps);
        if (!pat) { Py_DECREF(qs); goto fail; }
        PyList_SET_ITEM(patterns, p, pat);
        PyList_SET_ITEM(quants, p, qs);
    }
    return Py_BuildValue("(NNNN)", names, strings, patterns, quants);
fail:
    Py_XDECREF(names);
    Py_XDECREF(strings);
    Py_XDECREF(patterns);
    Py_XDECREF(quants);
    return NULL;
}

static PyObject *query_disable_capture(PyObject *self, PyObject *args) {
    PyObject *capsule;
    const char *name;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "Oy#", &capsule, &name, &len)) return NULL;
    TSQuery *q = query_of(capsule);
    if (!q) return NULL;
    ts_query_disable_capture(q, name, (uint32_t)len);
    Py_RETURN_NONE;
}

static PyObject *query_disable_pattern(PyObject *self, PyObject *args) {
    PyObject *capsule;
    unsigned int p;
    if (!PyArg_ParseTuple(args, "OI", &capsule, &p)) return NULL;
    TSQuery *q = query_of(capsule);
    if (!q) return NULL;
    ts_query_disable_pattern(q, p);
    Py_RETURN_NONE;
}

static PyObject *query_guaranteed(PyObject *self, PyObject *args) {
    PyObject *capsule;
    unsigned int offset;
    if (!PyArg_ParseTuple(args, "OI", &capsule, &offset)) return NULL;
    TSQuery *q = query_of(capsule);
    if (!q) return NULL;
    return PyBool_FromLong(ts_query_is_pattern_guaranteed_at_step(q, offset));
}

/* ---- captured nodes -> preorder indexes ---------------------------------------------
 * A node is known by its subtree id and start byte (a subtree reused at another place has
 * another start). The captured ones go into a small open-addressing table, then one cursor
 * walk in preorder numbers every visible node and fills in those it meets. */

typedef struct {
    const void *id;
    uint32_t start;
    int32_t index; /* -1 until the walk meets it */
} Slot;

typedef struct {
    Slot *slots;
    size_t mask, used;
} Table;

static size_t slot_of(const Table *t, const void *id, uint32_t start) {
    uint64_t h = (uint64_t)(uintptr_t)id * 0x9E3779B97F4A7C15ull ^ (uint64_t)start * 0xC2B2AE3D27D4EB4Full;
    size_t k = (size_t)(h ^ (h >> 31)) & t->mask;
    while (t->slots[k].id && !(t->slots[k].id == id && t->slots[k].start == start)) k = (k + 1) & t->mask;
    return k;
}

static int table_add(Table *t, TSNode n) {
    if (2 * (t->used + 1) > t->mask + 1) {
        size_t cap = 2 * (t->mask + 1);
        Slot *old = t->slots;
        size_t old_cap = t->mask + 1;
        t->slots = PyMem_Calloc(cap, sizeof(Slot));
        if (!t->slots) { t->slots = old; return -1; }
        t->mask = cap - 1;
        for (size_t k = 0; k < old_cap; k++)
            if (old[k].id) t->slots[slot_of(t, old[k].id, old[k].start)] = old[k];
        PyMem_Free(old);
    }
    size_t k = slot_of(t, n.id, ts_node_start_byte(n));
    if (!t->slots[k].id) {
        t->slots[k].id = n.id;
        t->slots[k].start = ts_node_start_byte(n);
        t->slots[k].index = -1;
        t->used++;
    }
    return 0;
}

/* Number the nodes in preorder (tree-sitter's cursor order, as stored); stops at `stop`
 * (returning that node in *found) or, with a table, once every entry is numbered. */
static void number_nodes(TSTree *tree, Table *t, int64_t stop, TSNode *found, Offset off) {
    TSTreeCursor c = ts_tree_cursor_new(
        ts_tree_root_node_with_offset(tree, off.bytes, (TSPoint){off.row, off.column}));
    int64_t index = 0;
    size_t left = t ? t->used : 0;
    for (;;) {
        TSNode n = ts_tree_cursor_current_node(&c);
        if (index == stop) { *found = n; break; }
        if (t) {
            size_t k = slot_of(t, n.id, ts_node_start_byte(n));
            if (t->slots[k].id && t->slots[k].index < 0) {
                t->slots[k].index = (int32_t)index;
                if (--left == 0) break;
            }
        }
        index++;
        if (ts_tree_cursor_goto_first_child(&c)) continue;
        while (!ts_tree_cursor_goto_next_sibling(&c))
            if (!ts_tree_cursor_goto_parent(&c)) goto done;
    }
done:
    ts_tree_cursor_delete(&c);
}

int push(Ints *a, int32_t x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        int32_t *v = PyMem_RawRealloc(a->v, cap * sizeof(int32_t));
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

static int push_record(Ints *ev, uint32_t capture, TSNode c) {
    TSPoint a = ts_node_start_point(c), b = ts_node_end_point(c);
    return push(ev, (int32_t)capture) || push(ev, (int32_t)ts_node_start_byte(c)) ||
           push(ev, (int32_t)ts_node_end_byte(c)) || push(ev, (int32_t)a.row) ||
           push(ev, (int32_t)a.column) || push(ev, (int32_t)b.row) ||
           push(ev, (int32_t)b.column) || push(ev, (int32_t)ts_node_symbol(c));
}

/* Every match of `q` under `node` as record events (query_exec's `records` layout), appended
 * to `ev`: what the indexer keeps of a file's tags query, run on the tree it parsed anyway.
 * 0, or -1 when out of memory. */
int query_records(const TSQuery *q, TSNode node, Ints *ev) {
    TSQueryCursor *cur = ts_query_cursor_new();
    if (!cur) return -1;
    ts_query_cursor_exec(cur, q, node);
    TSQueryMatch m;
    int rc = 0;
    while (!rc && ts_query_cursor_next_match(cur, &m)) {
        rc = push(ev, (int32_t)m.pattern_index) || push(ev, (int32_t)m.capture_count);
        for (uint16_t k = 0; !rc && k < m.capture_count; k++)
            rc = push_record(ev, m.captures[k].index, m.captures[k].node);
    }
    ts_query_cursor_delete(cur);
    return rc ? -1 : 0;
}

static int point_arg(PyObject *o, TSPoint *a, TSPoint *b) {
    return PyArg_ParseTuple(o, "(II)(II)", &a->row, &a->column, &b->row, &b->column);
}

/* query_exec(query, language_capsule, source, node_index, captures_mode, match_limit,
 *            max_start_depth, byte_range, point_range, containing_byte_range,
 *            containing_point_range, records=False) -> (int32 events, did_exceed_match_limit)
 * An event is [pattern, capture count, (captures mode: the capture it reports),
 * then per capture its id and either the node's preorder index or, with `records`, the
 * node itself as start byte, end byte, start row, start column, end row, end column and
 * symbol (for answers that need no stored tree)]; ranges are None or tuples. */
static PyObject *query_exec(PyObject *self, PyObject *args) {
    PyObject *qcap, *lcap, *br, *pr, *cbr, *cpr;
    Py_buffer src;
    long long node_index, max_depth;
    int captures_mode, records = 0;
    unsigned int limit;
    Offset off = {0, 0, 0};
    if (!PyArg_ParseTuple(args, "OOy*LpILOOOO|p(III)", &qcap, &lcap, &src, &node_index, &captures_mode,
                          &limit, &max_depth, &br, &pr, &cbr, &cpr, &records, &off.bytes, &off.row,
                          &off.column))
        return NULL;
    TSQuery *q = query_of(qcap);
    const TSLanguage *lang = q ? PyCapsule_GetPointer(lcap, "tree_sitter.Language") : NULL;
    if (!lang) { PyBuffer_Release(&src); return NULL; }
    if (src.len > (Py_ssize_t)UINT32_MAX) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "source larger than 4 GiB");
        return NULL;
    }
    TSParser *parser = take_parser(lang);
    TSTree *tree = parser ? ts_parser_parse_string(parser, NULL, src.buf, (uint32_t)src.len) : NULL;
    if (parser) {
        ts_parser_reset(parser);
        give_parser(lang, parser);
    }
    PyBuffer_Release(&src);
    if (!tree) { PyErr_SetString(PyExc_RuntimeError, "parse failed"); return NULL; }

    PyObject *out = NULL;
    Ints ev = {0};
    Table t = {PyMem_Calloc(64, sizeof(Slot)), 63, 0};
    TSQueryCursor *cur = ts_query_cursor_new();
    TSNode node = {{0}};
    if (!t.slots || !cur) { PyErr_NoMemory(); goto done; }
    number_nodes(tree, NULL, node_index, &node, off);
    if (ts_node_is_null(node)) { PyErr_SetString(PyExc_ValueError, "node not in the tree"); goto done; }
    ts_query_cursor_set_match_limit(cur, limit);
    if (max_depth >= 0) ts_query_cursor_set_max_start_depth(cur, (uint32_t)max_depth);
    unsigned int b0, b1;
    TSPoint p0, p1;
    if (br != Py_None) {
        if (!PyArg_ParseTuple(br, "II", &b0, &b1)) goto done;
        ts_query_cursor_set_byte_range(cur, b0, b1);
    }
    if (pr != Py_None) {
        if (!point_arg(pr, &p0, &p1)) goto done;
        ts_query_cursor_set_point_range(cur, p0, p1);
    }
    if (cbr != Py_None) {
        if (!PyArg_ParseTuple(cbr, "II", &b0, &b1)) goto done;
        ts_query_cursor_set_containing_byte_range(cur, b0, b1);
    }
    if (cpr != Py_None) {
        if (!point_arg(cpr, &p0, &p1)) goto done;
        ts_query_cursor_set_containing_point_range(cur, p0, p1);
    }
    ts_query_cursor_exec(cur, q, node);
    TSQueryMatch m;
    uint32_t which;
    /* nodes are recorded as table slots first (the table may grow: slots are resolved to
     * keys again below), then as preorder indexes */
    Ints keys = {0}; /* per capture: position in `ev` of its node, for the second pass */
    TSNode *nodes = NULL;
    size_t nn = 0, ncap = 0;
    for (;;) {
        int more = captures_mode ? ts_query_cursor_next_capture(cur, &m, &which)
                                 : ts_query_cursor_next_match(cur, &m);
        if (!more) break;
        if (push(&ev, (int32_t)m.pattern_index) || push(&ev, (int32_t)m.capture_count)) goto nomem;
        if (captures_mode && push(&ev, (int32_t)which)) goto nomem;
        for (uint16_t k = 0; k < m.capture_count; k++) {
            if (records) {
                if (push_record(&ev, m.captures[k].index, m.captures[k].node)) goto nomem;
                continue;
            }
            if (nn == ncap) {
                ncap = ncap ? 2 * ncap : 256;
                TSNode *grown = PyMem_Realloc(nodes, ncap * sizeof(TSNode));
                if (!grown) goto nomem;
                nodes = grown;
            }
            nodes[nn++] = m.captures[k].node;
            if (push(&ev, (int32_t)m.captures[k].index) || push(&keys, (int32_t)ev.n) ||
                push(&ev, -1) || table_add(&t, m.captures[k].node))
                goto nomem;
        }
    }
    if (t.used) number_nodes(tree, &t, -1, &node, off);
    for (size_t k = 0; k < nn; k++)
        ev.v[keys.v[k]] = t.slots[slot_of(&t, nodes[k].id, ts_node_start_byte(nodes[k]))].index;
    out = Py_BuildValue("(NO)", PyBytes_FromStringAndSize((const char *)ev.v, ev.n * sizeof(int32_t)),
                        ts_query_cursor_did_exceed_match_limit(cur) ? Py_True : Py_False);
    ints_free(&keys);
    PyMem_Free(nodes);
    goto done;
nomem:
    ints_free(&keys);
    PyMem_Free(nodes);
    PyErr_NoMemory();
done:
    if (cur) ts_query_cursor_delete(cur);
    PyMem_Free(t.slots);
    ints_free(&ev);
    ts_tree_delete(tree);
    return out;
}

PyMethodDef query_methods[] = {
    {"query_new", query_new, METH_VARARGS,
     "query_new(language_capsule, source) -> query capsule, or (error kind, offset)"},
    {"query_info", query_info, METH_O,
     "query_info(query) -> (capture names, strings, patterns, quantifiers)"},
    {"query_disable_capture", query_disable_capture, METH_VARARGS, "query_disable_capture(query, name)"},
    {"query_disable_pattern", query_disable_pattern, METH_VARARGS, "query_disable_pattern(query, i)"},
    {"query_guaranteed", query_guaranteed, METH_VARARGS,
     "query_guaranteed(query, byte_offset) -> is the pattern guaranteed at that step"},
    {"query_exec", query_exec, METH_VARARGS,
     "query_exec(query, language, source, node_index, captures_mode, match_limit, "
     "max_start_depth, byte_range, point_range, containing_byte_range, "
     "containing_point_range) -> (int32 events, did_exceed_match_limit)"},
    {NULL, NULL, 0, NULL},
};
