/* cstvault._native, queries over stored trees: tree-sitter's own query cursor walking a
 * stored tree's columns, with no parse.
 *
 * tree-sitter's matcher (lib/src/query.c) reads a tree through a dozen calls: cursor moves
 * (first child, next sibling, parent), the current node and its parent, per node its symbol,
 * named / missing flags and range, what ts_tree_cursor_current_status reports (field, later
 * siblings, later siblings with the same field, supertypes) and, for negated fields,
 * ts_node_child_by_field_id. This file compiles the pinned runtime's query.c a second time
 * (from the sdist setup.py builds the runtime from; nothing is copied into this repository)
 * with those calls redirected to a cursor over the columns, and its external symbols renamed
 * so that it links beside the runtime's. The cursor visits the visible nodes in
 * ts_tree_cursor's preorder (the stored order), so states, their order and the matches are
 * tree-sitter's own; `cstvault verify-queries` compares them with py-tree-sitter's.
 *
 * The columns carry every visible node, its field and, in a record's status stream, the
 * two facts of ts_tree_cursor_current_status that only the productions know (extract.c's
 * node_status). They do not carry hidden nodes, so a query is answered here only when that
 * cannot matter; otherwise `colq_exec` returns None and the caller re-parses (query.c):
 *  - a pattern with a supertype step (supertypes are hidden ancestors);
 *  - a point range (rows and columns are not columns; byte ranges are fine);
 *  - a byte or containing range together with a non-rooted pattern or an empty node in the
 *    tree: tree-sitter may skip a hidden repetition outside the range whose visible children
 *    this walk visits, which can start such a pattern (or match an empty node at the edge).
 */
#include "native.h"

#include <tree_cursor.h>

/* ---- a cursor and nodes over the columns -------------------------------------------- */

typedef struct {
    const TreeBase *t;
    const uint32_t *status; /* (node, field << 1 | later) pairs, ascending */
    Py_ssize_t n_status;
    uint32_t root;          /* the node the query runs on: the cursor cannot leave it */
    int32_t *lastnamed;     /* per open level: the last named child of its parent (-2: not yet known) */
    size_t depth, cap;
    int oom;
    int named_later;        /* the query has last-child anchors: later named siblings matter */
    uint32_t ob;            /* the node's offset bytes (root_node_with_offset): positions shift */
} ColView;

static inline const ColView *view_of(const void *p) { return (const ColView *)p; }

static inline TSNode colq_make(const ColView *v, uint32_t i) {
    TSNode n = {{i, 0, 0, 0}, (const void *)(uintptr_t)(i + 1), (const TSTree *)v};
    return n;
}

static const TSNode NULL_NODE = {{0, 0, 0, 0}, NULL, NULL};

#define COL(n) (view_of((n).tree)->t)
static uint32_t colq_node_start_byte(TSNode n) { return COL(n)->start[n.context[0]] + view_of(n.tree)->ob; }
static uint32_t colq_node_end_byte(TSNode n) { return COL(n)->end[n.context[0]] + view_of(n.tree)->ob; }
/* Points stand in as (0, byte): only point ranges compare real points, and those are not
 * answered here; against the default ranges (0, byte) orders exactly as the real point. */
static TSPoint colq_node_start_point(TSNode n) { return (TSPoint){0, colq_node_start_byte(n)}; }
static TSPoint colq_node_end_point(TSNode n) { return (TSPoint){0, colq_node_end_byte(n)}; }
static bool colq_node_is_null(TSNode n) { return n.id == NULL; }
static TSSymbol colq_node_symbol(TSNode n) { return COL(n)->kind[n.context[0]]; }
static bool colq_node_is_named(TSNode n) { return (COL(n)->flags[n.context[0]] & NAMED) != 0; }
static bool colq_node_is_missing(TSNode n) { return (COL(n)->flags[n.context[0]] & MISSING) != 0; }
static const char *colq_node_type(TSNode n) { (void)n; return ""; } /* query.c logs with it */

/* A node's query-status pair (extract.c node_status): 1 and its value, or 0 when it has
 * none (then: the stored field, nothing inherited, no later sibling with the field). */
static int status_of(const ColView *v, uint32_t i, uint32_t *value) {
    Py_ssize_t lo = 0, hi = v->n_status;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (v->status[2 * mid] < i) lo = mid + 1; else hi = mid;
    }
    if (lo == v->n_status || v->status[2 * lo] != i) return 0;
    *value = v->status[2 * lo + 1];
    return 1;
}

/* ts_node_child_by_field_id over the columns: the first child with the field; a child
 * through which its parent's field map inherits fields (a rule that was hidden: the status
 * stream marks it) is searched too, as tree-sitter does; an ERROR node has none. */
static int64_t child_with_field(const ColView *v, uint32_t i, TSFieldId field) {
    const TreeBase *t = v->t;
    if (t->kind[i] == ERROR_SYMBOL) return -1; /* production 0: no field map of its own (a
        child's field came from a hidden node in between, which ERROR does not inherit) */
    for (int64_t j = (int64_t)i + 1; j < (int64_t)i + t->size[i]; j += t->size[j]) {
        if (t->flags[j] & EXTRA) continue;
        if (t->field[j] == field) return j;
        uint32_t st;
        if (t->size[j] > 1 && status_of(v, (uint32_t)j, &st) && (st & 2)) {
            int64_t got = child_with_field(v, (uint32_t)j, field);
            if (got >= 0) return got;
        }
    }
    return -1;
}

static TSNode colq_node_child_by_field_id(TSNode n, TSFieldId field) {
    int64_t j = child_with_field(view_of(n.tree), n.context[0], field);
    return j < 0 ? NULL_NODE : colq_make(view_of(n.tree), (uint32_t)j);
}

static void colq_cursor_reset(TSTreeCursor *c, TSNode node) {
    ColView *v = (ColView *)node.tree;
    c->tree = v;
    c->id = NULL;
    c->context[0] = node.context[0];
    v->depth = 0;
}

static void colq_cursor_delete(TSTreeCursor *c) { (void)c; }

static TSNode colq_cursor_current_node(const TSTreeCursor *c) { return colq_make(c->tree, c->context[0]); }

static TSNode colq_cursor_parent_node(const TSTreeCursor *c) {
    const ColView *v = c->tree;
    uint32_t i = c->context[0];
    return i == v->root ? NULL_NODE : colq_make(v, (uint32_t)v->t->parent[i]);
}

static TreeCursorStep colq_goto_first_child(TSTreeCursor *c) {
    ColView *v = (ColView *)c->tree;
    uint32_t i = c->context[0];
    if (v->t->size[i] < 2) return TreeCursorStepNone;
    if (v->depth == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        int32_t *q = realloc(v->lastnamed, cap * sizeof(int32_t));
        if (!q) { v->oom = 1; return TreeCursorStepNone; }
        v->lastnamed = q;
        v->cap = cap;
    }
    v->lastnamed[v->depth++] = -2;
    c->context[0] = i + 1;
    return TreeCursorStepVisible;
}

static TreeCursorStep colq_goto_next_sibling(TSTreeCursor *c) {
    const ColView *v = c->tree;
    uint32_t i = c->context[0];
    if (i == v->root) return TreeCursorStepNone;
    int32_t p = v->t->parent[i];
    int64_t j = (int64_t)i + v->t->size[i];
    if (j >= (int64_t)p + v->t->size[p]) return TreeCursorStepNone;
    c->context[0] = (uint32_t)j;
    return TreeCursorStepVisible;
}

static bool colq_goto_parent(TSTreeCursor *c) {
    ColView *v = (ColView *)c->tree;
    uint32_t i = c->context[0];
    if (i == v->root) return false;
    c->context[0] = (uint32_t)v->t->parent[i];
    if (v->depth) v->depth--;
    return true;
}

static void colq_current_status(const TSTreeCursor *c, TSFieldId *field_id, bool *has_later_siblings,
                                bool *has_later_named_siblings,
                                bool *can_have_later_siblings_with_this_field, TSSymbol *supertypes,
                                unsigned *supertype_count) {
    ColView *v = (ColView *)c->tree;
    const TreeBase *t = v->t;
    uint32_t i = c->context[0];
    (void)supertypes;
    *supertype_count = 0; /* queries with supertype steps are not run here */
    *field_id = 0;
    *has_later_siblings = *has_later_named_siblings = *can_have_later_siblings_with_this_field = false;
    if (i == v->root || !v->depth) return; /* the cursor's root: no level above it */
    uint32_t st;
    if (status_of(v, i, &st)) {
        *field_id = (TSFieldId)(st >> 2);
        *can_have_later_siblings_with_this_field = st & 1;
    } else {
        *field_id = t->field[i];
    }
    int32_t p = t->parent[i];
    int64_t next = (int64_t)i + t->size[i], end = (int64_t)p + t->size[p];
    *has_later_siblings = next < end;
    if (!v->named_later) return; /* only last-child anchors read has_later_named_siblings */
    int32_t *last = &v->lastnamed[v->depth - 1];
    if (*last == -2) {
        *last = -1;
        for (int64_t j = (int64_t)p + 1; j < end; j += t->size[j])
            if (t->flags[j] & NAMED) *last = (int32_t)j;
    }
    *has_later_named_siblings = *last > (int32_t)i;
}

/* Never reached: the cursor reports no hidden node, and query.c asks for the subtree only
 * on one (to skip hidden repetitions). */
static Subtree colq_current_subtree(const TSTreeCursor *c) {
    (void)c;
    Subtree s;
    memset(&s, 0, sizeof s);
    s.data.is_inline = true;
    return s;
}

/* ---- query.c, over the cursor above -------------------------------------------------- */

#define ts_tree_cursor_reset colq_cursor_reset
#define ts_tree_cursor_delete colq_cursor_delete
#define ts_tree_cursor_current_node colq_cursor_current_node
#define ts_tree_cursor_parent_node colq_cursor_parent_node
#define ts_tree_cursor_goto_first_child_internal colq_goto_first_child
#define ts_tree_cursor_goto_next_sibling_internal colq_goto_next_sibling
#define ts_tree_cursor_goto_parent colq_goto_parent
#define ts_tree_cursor_current_status colq_current_status
#define ts_tree_cursor_current_subtree colq_current_subtree
#define ts_node_start_byte colq_node_start_byte
#define ts_node_end_byte colq_node_end_byte
#define ts_node_start_point colq_node_start_point
#define ts_node_end_point colq_node_end_point
#define ts_node_is_null colq_node_is_null
#define ts_node_symbol colq_node_symbol
#define ts_node_is_named colq_node_is_named
#define ts_node_is_missing colq_node_is_missing
#define ts_node_type colq_node_type
#define ts_node_child_by_field_id colq_node_child_by_field_id
/* every external symbol of query.c, so that this copy links beside the runtime's */
#define range_intersects colq_range_intersects
#define range_within colq_range_within
#define ts_query__step_is_fallible colq_query__step_is_fallible
#define ts_query_capture_count colq_query_capture_count
#define ts_query_capture_name_for_id colq_query_capture_name_for_id
#define ts_query_capture_quantifier_for_id colq_query_capture_quantifier_for_id
#define ts_query_cursor__compare_captures colq_query_cursor__compare_captures
#define ts_query_cursor__compare_nodes colq_query_cursor__compare_nodes
#define ts_query_cursor_delete colq_query_cursor_delete
#define ts_query_cursor_did_exceed_match_limit colq_query_cursor_did_exceed_match_limit
#define ts_query_cursor_exec colq_query_cursor_exec
#define ts_query_cursor_exec_with_options colq_query_cursor_exec_with_options
#define ts_query_cursor_match_limit colq_query_cursor_match_limit
#define ts_query_cursor_new colq_query_cursor_new
#define ts_query_cursor_next_capture colq_query_cursor_next_capture
#define ts_query_cursor_next_match colq_query_cursor_next_match
#define ts_query_cursor_remove_match colq_query_cursor_remove_match
#define ts_query_cursor_set_byte_range colq_query_cursor_set_byte_range
#define ts_query_cursor_set_containing_byte_range colq_query_cursor_set_containing_byte_range
#define ts_query_cursor_set_containing_point_range colq_query_cursor_set_containing_point_range
#define ts_query_cursor_set_match_limit colq_query_cursor_set_match_limit
#define ts_query_cursor_set_max_start_depth colq_query_cursor_set_max_start_depth
#define ts_query_cursor_set_point_range colq_query_cursor_set_point_range
#define ts_query_delete colq_query_delete
#define ts_query_disable_capture colq_query_disable_capture
#define ts_query_disable_pattern colq_query_disable_pattern
#define ts_query_end_byte_for_pattern colq_query_end_byte_for_pattern
#define ts_query_is_pattern_guaranteed_at_step colq_query_is_pattern_guaranteed_at_step
#define ts_query_is_pattern_non_local colq_query_is_pattern_non_local
#define ts_query_is_pattern_rooted colq_query_is_pattern_rooted
#define ts_query_new colq_query_new
#define ts_query_pattern_count colq_query_pattern_count
#define ts_query_predicates_for_pattern colq_query_predicates_for_pattern
#define ts_query_start_byte_for_pattern colq_query_start_byte_for_pattern
#define ts_query_string_count colq_query_string_count
#define ts_query_string_value_for_id colq_query_string_value_for_id

#include <query.c>

/* ---- entry point ---------------------------------------------------------------------- */

/* Can the columns answer this query (no supertype step; with a range, no non-rooted
 * pattern)? */
static int columns_can_answer(const TSQuery *q, int ranged) {
    for (uint32_t k = 0; k < q->steps.size; k++)
        if (q->steps.contents[k].supertype_symbol) return 0;
    if (ranged)
        for (uint32_t p = 0; p < q->patterns.size; p++)
            if (!colq_query_is_pattern_rooted(q, p)) return 0;
    return 1;
}

/* Row and column of a byte offset, by binary search in the line starts. */
static TSPoint point_at(const uint32_t *lines, size_t nlines, uint32_t byte) {
    size_t lo = 0, hi = nlines;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (lines[mid] <= byte) lo = mid; else hi = mid;
    }
    return (TSPoint){(uint32_t)lo, byte - lines[lo]};
}

static int push_range(Ints *ev, uint32_t capture, const TreeBase *t, uint32_t i, const uint32_t *lines,
                      size_t nlines) {
    TSPoint a = point_at(lines, nlines, t->start[i]), b = point_at(lines, nlines, t->end[i]);
    return push(ev, (int32_t)capture) || push(ev, (int32_t)t->start[i]) || push(ev, (int32_t)t->end[i]) ||
           push(ev, (int32_t)a.row) || push(ev, (int32_t)a.column) || push(ev, (int32_t)b.row) ||
           push(ev, (int32_t)b.column) || push(ev, (int32_t)t->kind[i]);
}

/* colq_exec(cursor, query, tree, status, node_index, captures_mode, match_limit,
 *           max_start_depth, byte_range, containing_byte_range, source=None)
 *   -> (int32 events, did_exceed_match_limit), or None when the columns cannot answer
 * Events as query_exec's: [pattern, capture count, (captures mode: the reported capture),
 * per capture its id and the node's preorder index], or with `source` (the tree's text) the
 * node as start byte, end byte, start row, start column, end row, end column and symbol. */
#define CURSOR_CAPSULE "cstvault.TSQueryCursor"

static void cursor_free(PyObject *capsule) {
    TSQueryCursor *c = PyCapsule_GetPointer(capsule, CURSOR_CAPSULE);
    if (c) colq_query_cursor_delete(c);
}

/* colq_cursor() -> a query cursor capsule for colq_exec */
static PyObject *colq_cursor(PyObject *self, PyObject *unused) {
    TSQueryCursor *c = colq_query_cursor_new();
    if (!c) return PyErr_NoMemory();
    PyObject *out = PyCapsule_New(c, CURSOR_CAPSULE, cursor_free);
    if (!out) colq_query_cursor_delete(c);
    return out;
}

static PyObject *colq_exec(PyObject *self, PyObject *args) {
    PyObject *cur_obj, *qcap, *tobj, *status_obj, *br, *cbr, *src_obj = Py_None;
    long long node_index, max_depth;
    int captures_mode;
    unsigned int limit, ob = 0;
    if (!PyArg_ParseTuple(args, "OOOOLpILOO|OI", &cur_obj, &qcap, &tobj, &status_obj, &node_index,
                          &captures_mode, &limit, &max_depth, &br, &cbr, &src_obj, &ob))
        return NULL;
    TSQuery *q = query_of(qcap);
    if (!q) return NULL;
    if (!PyObject_TypeCheck(tobj, &TreeBaseType) || !((TreeBase *)tobj)->bound) {
        PyErr_SetString(PyExc_TypeError, "a bound tree is required");
        return NULL;
    }
    TreeBase *t = (TreeBase *)tobj;
    if (node_index < 0 || node_index >= t->n) {
        PyErr_SetString(PyExc_ValueError, "node not in the tree");
        return NULL;
    }
    int ranged = br != Py_None || cbr != Py_None;
    if (status_obj == Py_None || !columns_can_answer(q, ranged)) Py_RETURN_NONE;
    unsigned int b0 = 0, b1 = 0, c0 = 0, c1 = 0;
    if (br != Py_None && !PyArg_ParseTuple(br, "II", &b0, &b1)) return NULL;
    if (cbr != Py_None && !PyArg_ParseTuple(cbr, "II", &c0, &c1)) return NULL;
    if (ranged) /* an empty node may sit at the edge of a skipped hidden repetition */
        for (Py_ssize_t i = node_index; i < node_index + t->size[node_index]; i++)
            if (t->start[i] == t->end[i]) Py_RETURN_NONE;

    Py_buffer st = {0}, src = {0};
    if (PyObject_GetBuffer(status_obj, &st, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (src_obj != Py_None && PyObject_GetBuffer(src_obj, &src, PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&st);
        return NULL;
    }
    ColView v = {t, st.buf, st.len / 8, (uint32_t)node_index, NULL, 0, 0, 0, 0, ob};
    for (uint32_t k = 0; k < q->steps.size && !v.named_later; k++)
        v.named_later = q->steps.contents[k].is_last_child;
    uint32_t *lines = NULL;
    size_t nlines = 0;
    PyObject *out = NULL;
    Ints ev = {0};
    /* the caller's cursor (a QueryCursor keeps one, as py-tree-sitter's does: its capture
     * lists outlive an exec, which decides when a match limit is exceeded), its ranges and
     * limits set afresh */
    TSQueryCursor *cur = PyCapsule_GetPointer(cur_obj, CURSOR_CAPSULE);
    if (!cur) goto done;
    colq_query_cursor_set_byte_range(cur, 0, UINT32_MAX);
    colq_query_cursor_set_containing_byte_range(cur, 0, UINT32_MAX);
    colq_query_cursor_set_max_start_depth(cur, UINT32_MAX);
    if (src.buf) { /* line starts, for the points of captured nodes */
        const char *s = src.buf, *e = s + src.len;
        size_t cap = 64;
        lines = malloc(cap * sizeof(uint32_t));
        if (!lines) { PyErr_NoMemory(); goto done; }
        lines[nlines++] = 0;
        for (const char *p = s; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++) {
            if (nlines == cap) {
                uint32_t *g = realloc(lines, 2 * cap * sizeof(uint32_t));
                if (!g) { PyErr_NoMemory(); goto done; }
                lines = g;
                cap *= 2;
            }
            lines[nlines++] = (uint32_t)(p - s + 1);
        }
    }
    colq_query_cursor_set_match_limit(cur, limit);
    if (max_depth >= 0) colq_query_cursor_set_max_start_depth(cur, (uint32_t)max_depth);
    if (br != Py_None) colq_query_cursor_set_byte_range(cur, b0, b1);
    if (cbr != Py_None) colq_query_cursor_set_containing_byte_range(cur, c0, c1);
    colq_query_cursor_exec(cur, q, colq_make(&v, (uint32_t)node_index));
    TSQueryMatch m;
    uint32_t which;
    for (;;) {
        int more = captures_mode ? colq_query_cursor_next_capture(cur, &m, &which)
                                 : colq_query_cursor_next_match(cur, &m);
        if (!more) break;
        if (push(&ev, (int32_t)m.pattern_index) || push(&ev, (int32_t)m.capture_count) ||
            (captures_mode && push(&ev, (int32_t)which)))
            goto nomem;
        for (uint16_t k = 0; k < m.capture_count; k++) {
            uint32_t i = m.captures[k].node.context[0];
            if (lines ? push_range(&ev, m.captures[k].index, t, i, lines, nlines)
                      : push(&ev, (int32_t)m.captures[k].index) || push(&ev, (int32_t)i))
                goto nomem;
        }
    }
    if (v.oom) goto nomem;
    out = Py_BuildValue("(NO)", PyBytes_FromStringAndSize((const char *)ev.v, ev.n * sizeof(int32_t)),
                        colq_query_cursor_did_exceed_match_limit(cur) ? Py_True : Py_False);
    goto done;
nomem:
    PyErr_NoMemory();
done:
    free(lines);
    free(v.lastnamed);
    ints_free(&ev);
    PyBuffer_Release(&st);
    if (src.obj) PyBuffer_Release(&src);
    return out;
}

/* query_required_kinds(query) -> per pattern, the named node kinds every match of it
 * contains: the symbols of its steps that no path through the pattern can skip (no
 * alternative, quantifier skip or alternation branch jumps over them); wildcards, ERROR and
 * supertype steps require nothing (the caller keeps the named kinds). A stored file lacking one of them for
 * every pattern cannot match (the whole-store query's kind prefilter). */
static PyObject *query_required_kinds(PyObject *self, PyObject *capsule) {
    const TSQuery *q = query_of(capsule);
    if (!q) return NULL;
    PyObject *out = PyList_New(q->patterns.size);
    for (uint32_t p = 0; out && p < q->patterns.size; p++) {
        Slice sl = q->patterns.contents[p].steps;
        PyObject *kinds = PyList_New(0);
        if (!kinds) { Py_CLEAR(out); break; }
        for (uint32_t k = sl.offset; k < sl.offset + sl.length; k++) {
            const QueryStep *st = &q->steps.contents[k];
            if (st->depth == PATTERN_DONE_MARKER || st->is_dead_end || st->is_pass_through ||
                st->symbol == WILDCARD_SYMBOL || st->symbol == ts_builtin_sym_error ||
                st->supertype_symbol)
                continue;
            int skippable = 0;
            for (uint32_t j = sl.offset; j <= k && !skippable; j++) {
                uint16_t alt = q->steps.contents[j].alternative_index;
                skippable = alt != NONE && alt > k;
            }
            if (skippable) continue;
            PyObject *v = PyLong_FromLong(st->symbol);
            if (!v || PyList_Append(kinds, v) < 0) { Py_XDECREF(v); Py_CLEAR(kinds); break; }
            Py_DECREF(v);
        }
        if (!kinds) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, p, kinds);
    }
    return out;
}

/* Append `item` to the list `dict[key]`, made when missing; 0, or -1 with an exception. */
static int add_to(PyObject *dict, PyObject *key, PyObject *item) {
    PyObject *list = PyDict_GetItemWithError(dict, key); /* borrowed */
    if (list) return PyList_Append(list, item);
    if (PyErr_Occurred() || !(list = PyList_New(1))) return -1;
    PyList_SET_ITEM(list, 0, Py_NewRef(item));
    int rc = PyDict_SetItem(dict, key, list);
    Py_DECREF(list);
    return rc;
}

/* A tuple-subclass instance (a NamedTuple's) from `n` new references (stolen). */
static PyObject *named(PyTypeObject *type, Py_ssize_t n, PyObject **items) {
    PyObject *t = type->tp_alloc(type, n);
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!items[k] || !t) { for (; k < n; k++) Py_XDECREF(items[k]); Py_XDECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, k, items[k]);
    }
    return t;
}

/* The text of the `nth` capture with id `cap` among a match's records, or NULL. */
static const char *nth_text(const int32_t *r, int32_t count, int32_t cap, int nth, const char *src,
                            Py_ssize_t *len) {
    for (int32_t c = 0; c < count; c++, r += 8)
        if (r[0] == cap && nth-- == 0) { *len = r[2] - r[1]; return src + r[1]; }
    return NULL;
}

static int in_values(PyObject *values, const char *t, Py_ssize_t len) {
    for (Py_ssize_t v = 0; v < PyTuple_GET_SIZE(values); v++) {
        PyObject *b = PyTuple_GET_ITEM(values, v);
        if (PyBytes_GET_SIZE(b) == len && memcmp(PyBytes_AS_STRING(b), t, (size_t)len) == 0) return 1;
    }
    return 0;
}

/* Does a match pass its pattern's text predicates, as cstvault.query._holds evaluates
 * them? `checks`: tuple of (kind 0 = equal to one of the values / 1 = equal to another
 * capture, capture, other capture, values, positive, any). */
static int passes(PyObject *checks, const int32_t *r, int32_t count, const char *src) {
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(checks); k++) {
        PyObject *c = PyTuple_GET_ITEM(checks, k);
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(c, 0));
        int32_t cap = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(c, 1));
        int32_t other = (int32_t)PyLong_AsLong(PyTuple_GET_ITEM(c, 2));
        PyObject *values = PyTuple_GET_ITEM(c, 3);
        int positive = PyObject_IsTrue(PyTuple_GET_ITEM(c, 4));
        int any = PyObject_IsTrue(PyTuple_GET_ITEM(c, 5));
        int seen = 0, some = 0, every = 1;
        for (int nth = 0;; nth++) {
            Py_ssize_t la, lb;
            const char *a = nth_text(r, count, cap, nth, src, &la);
            if (!a) break;
            int result;
            if (kind == 1) {
                const char *b = nth_text(r, count, other, nth, src, &lb);
                if (!b) break;
                result = (la == lb && memcmp(a, b, (size_t)la) == 0) == positive;
            } else {
                result = in_values(values, a, la) == positive;
            }
            seen = 1;
            some |= result;
            every &= result;
        }
        if (seen && !(any ? some : every)) return 0;
    }
    return 1;
}

/* record_matches(path, source bytes, events, capture_names, kind_names, match_type, checks)
 *   -> [match_type(path, pattern, {capture name: [Capture]})]
 * The record events (colq_exec or query_exec with a source) of one file as the objects a
 * whole-store query streams, made here rather than by a Python call per capture; a match
 * failing its pattern's text predicates (`checks[pattern]`, a tuple, or None) is left out. */
static PyObject *record_matches(PyObject *self, PyObject *args) {
    PyObject *path, *source, *names, *kinds, *checks;
    PyTypeObject *mtype;
    Py_buffer src, ev;
    if (!PyArg_ParseTuple(args, "USy*O!O!O!O!", &path, &source, &ev, &PyTuple_Type, &names,
                          &PyTuple_Type, &kinds, &PyType_Type, &mtype, &PyTuple_Type, &checks))
        return NULL;
    if (PyObject_GetBuffer(source, &src, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&ev); return NULL; }
    const int32_t *e = ev.buf;
    Py_ssize_t ne = ev.len / 4, k = 0, nn = PyTuple_GET_SIZE(names), nk = PyTuple_GET_SIZE(kinds);
    PyObject *out = PyList_New(0);
    int gc_was = PyGC_Disable(); /* many small containers: no collection halfway */
    while (out && k + 2 <= ne) {
        int32_t pattern = e[k], count = e[k + 1];
        k += 2;
        if (count < 0 || k + 8 * (Py_ssize_t)count > ne) goto bad;
        for (int32_t c = 0; c < count; c++) {
            const int32_t *r = e + k + 8 * c;
            if (r[0] < 0 || r[0] >= nn || r[1] < 0 || r[2] < r[1] || r[2] > src.len) goto bad;
        }
        PyObject *check = pattern >= 0 && pattern < PyTuple_GET_SIZE(checks) ? PyTuple_GET_ITEM(checks, pattern) : Py_None;
        if (check != Py_None && (!PyTuple_Check(check) || !passes(check, e + k, count, src.buf))) {
            if (PyErr_Occurred()) goto fail;
            k += 8 * (Py_ssize_t)count;
            continue;
        }
        PyObject *caps = PyDict_New();
        if (!caps) goto fail;
        for (int32_t c = 0; c < count; c++, k += 8) {
            const int32_t *r = e + k; /* capture, start, end, start row, col, end row, col, symbol */
            PyObject *kind = PyTuple_GET_ITEM(kinds, (uint16_t)r[7] == 0xFFFF || r[7] >= nk ? nk - 1 : r[7]);
            PyObject *cap = capture_new(kind, source, r + 1);
            int rc = cap ? add_to(caps, PyTuple_GET_ITEM(names, r[0]), cap) : -1;
            Py_XDECREF(cap);
            if (rc < 0) { Py_DECREF(caps); goto fail; }
        }
        PyObject *items[3] = {Py_NewRef(path), PyLong_FromLong(pattern), caps};
        PyObject *m = named(mtype, 3, items);
        if (!m || PyList_Append(out, m) < 0) { Py_XDECREF(m); goto fail; }
        Py_DECREF(m);
    }
    if (out && k != ne) goto bad;
    if (gc_was) PyGC_Enable();
    PyBuffer_Release(&src);
    PyBuffer_Release(&ev);
    return out;
bad:
    PyErr_SetString(PyExc_ValueError, "malformed record events");
fail:
    if (gc_was) PyGC_Enable();
    Py_XDECREF(out);
    PyBuffer_Release(&src);
    PyBuffer_Release(&ev);
    return NULL;
}

/* node_matches(tree, events, captures_mode, capture_names, checks, python_checked)
 *   matches mode  -> [(pattern, {capture name: [Node]})]
 *   captures mode -> {capture name: [Node]} (each node once per name, in capture order)
 * QueryCursor's answers from node-index events (colq_exec or query_exec), made here: a match
 * failing its pattern's text predicates (`checks`, as record_matches) is left out. In
 * captures mode a match of a pattern in `python_checked` (a frozenset: predicates only
 * Python evaluates) is kept whole as (pattern, {name: [Node]}, reported name, Node) in a
 * second list for QueryCursor to decide, returned beside the dict. */
static PyObject *node_matches(PyObject *self, PyObject *args) {
    PyObject *tobj, *names, *checks, *pychecked;
    Py_buffer ev;
    int captures_mode;
    Offset off = {0, 0, 0};
    if (!PyArg_ParseTuple(args, "Oy*pO!O!O|(III)", &tobj, &ev, &captures_mode, &PyTuple_Type, &names,
                          &PyTuple_Type, &checks, &pychecked, &off.bytes, &off.row, &off.column))
        return NULL;
    if (!PyObject_TypeCheck(tobj, &TreeBaseType) || !((TreeBase *)tobj)->bound) {
        PyBuffer_Release(&ev);
        PyErr_SetString(PyExc_TypeError, "a bound tree is required");
        return NULL;
    }
    TreeBase *t = (TreeBase *)tobj;
    const int32_t *e = ev.buf;
    Py_ssize_t ne = ev.len / 4, k = 0, nn = PyTuple_GET_SIZE(names);
    int any_checks = 0;
    for (Py_ssize_t p = 0; p < PyTuple_GET_SIZE(checks); p++) any_checks |= PyTuple_GET_ITEM(checks, p) != Py_None;
    Py_buffer src = {0};
    int32_t *rec = NULL; /* a match as record_matches' 8-int records, for `passes` */
    size_t rec_cap = 0;
    PyObject *out = captures_mode ? PyDict_New() : PyList_New(0);
    PyObject *held = captures_mode ? PyList_New(0) : NULL; /* matches left to Python */
    PyObject *seen = captures_mode ? PyDict_New() : NULL;   /* name -> set of node indexes */
    int gc_was = 0;
    if (!out || (captures_mode && (!held || !seen))) goto fail;
    gc_was = PyGC_Disable(); /* many small containers: no collection halfway */
    if (any_checks) {
        PyObject *s = PyObject_GetAttrString(tobj, "_source");
        if (!s) goto fail;
        int rc = PyObject_GetBuffer(s, &src, PyBUF_SIMPLE);
        Py_DECREF(s);
        if (rc < 0) goto fail;
    }
    while (k + 2 <= ne) {
        int32_t pattern = e[k], count = e[k + 1], which = -1;
        k += 2;
        if (captures_mode) { if (k >= ne) goto bad; which = e[k++]; }
        if (count < 0 || k + 2 * (Py_ssize_t)count > ne || (captures_mode && (which < 0 || which >= count))) goto bad;
        const int32_t *c = e + k;
        k += 2 * (Py_ssize_t)count;
        for (int32_t j = 0; j < count; j++)
            if (c[2 * j] < 0 || c[2 * j] >= nn || c[2 * j + 1] < 0 || c[2 * j + 1] >= t->n) goto bad;
        PyObject *check = pattern >= 0 && pattern < PyTuple_GET_SIZE(checks) ? PyTuple_GET_ITEM(checks, pattern) : Py_None;
        if (check != Py_None) {
            if ((size_t)count > rec_cap) {
                rec_cap = (size_t)count;
                int32_t *g = realloc(rec, 8 * rec_cap * sizeof(int32_t));
                if (!g) { PyErr_NoMemory(); goto fail; }
                rec = g;
            }
            for (int32_t j = 0; j < count; j++) { /* the texts node.text gives (offset, clamped) */
                int32_t i = c[2 * j + 1];
                Py_ssize_t e = (Py_ssize_t)t->end[i] + off.bytes, b = (Py_ssize_t)t->start[i] + off.bytes;
                if (e > src.len) e = src.len;
                if (b > e) b = e;
                rec[8 * j] = c[2 * j];
                rec[8 * j + 1] = (int32_t)b;
                rec[8 * j + 2] = (int32_t)e;
            }
            if (!passes(check, rec, count, src.buf)) { if (PyErr_Occurred()) goto fail; continue; }
        }
        PyObject *pat = PyLong_FromLong(pattern);
        if (!pat) goto fail;
        int python = PySet_Contains(pychecked, pat);
        if (python < 0) { Py_DECREF(pat); goto fail; }
        if (captures_mode && !python) { /* the reported capture, once per name */
            PyObject *name = PyTuple_GET_ITEM(names, c[2 * which]);
            PyObject *idx = PyLong_FromLong(c[2 * which + 1]);
            PyObject *set = idx ? PyDict_GetItemWithError(seen, name) : NULL;
            int rc = -1;
            if (idx && !set && !PyErr_Occurred()) {
                set = PySet_New(NULL);
                PyObject *list = PyList_New(0);
                if (set && list && PyDict_SetItem(seen, name, set) == 0 && PyDict_SetItem(out, name, list) == 0) rc = 0;
                Py_XDECREF(set);
                Py_XDECREF(list);
            } else if (set) rc = 0;
            if (rc == 0) {
                int has = PySet_Contains(set, idx);
                if (has < 0) rc = -1;
                else if (!has) {
                    PyObject *node = make_node_off(t, c[2 * which + 1], off);
                    rc = node && PySet_Add(set, idx) == 0 ? PyList_Append(PyDict_GetItem(out, name), node) : -1;
                    Py_XDECREF(node);
                }
            }
            Py_XDECREF(idx);
            Py_DECREF(pat);
            if (rc < 0) goto fail;
            continue;
        }
        PyObject *caps = PyDict_New();
        if (!caps) { Py_DECREF(pat); goto fail; }
        PyObject *reported = NULL;
        for (int32_t j = 0; j < count; j++) {
            PyObject *node = make_node_off(t, c[2 * j + 1], off);
            int rc = node ? add_to(caps, PyTuple_GET_ITEM(names, c[2 * j]), node) : -1;
            if (j == which) reported = Py_XNewRef(node);
            Py_XDECREF(node);
            if (rc < 0) { Py_DECREF(caps); Py_DECREF(pat); Py_XDECREF(reported); goto fail; }
        }
        PyObject *m = captures_mode
            ? Py_BuildValue("(NNON)", pat, caps, PyTuple_GET_ITEM(names, c[2 * which]), reported)
            : Py_BuildValue("(NN)", pat, caps);
        if (!captures_mode) Py_XDECREF(reported);
        if (!m || PyList_Append(captures_mode ? held : out, m) < 0) { Py_XDECREF(m); goto fail; }
        Py_DECREF(m);
    }
    if (k != ne) goto bad;
    if (gc_was) PyGC_Enable();
    free(rec);
    if (src.obj) PyBuffer_Release(&src);
    PyBuffer_Release(&ev);
    Py_XDECREF(seen);
    if (captures_mode) return Py_BuildValue("(NN)", out, held);
    return out;
bad:
    PyErr_SetString(PyExc_ValueError, "malformed match events");
fail:
    if (gc_was) PyGC_Enable();
    free(rec);
    if (src.obj) PyBuffer_Release(&src);
    PyBuffer_Release(&ev);
    Py_XDECREF(out);
    Py_XDECREF(held);
    Py_XDECREF(seen);
    return NULL;
}

PyMethodDef colquery_methods[] = {
    {"node_matches", node_matches, METH_VARARGS,
     "node_matches(tree, events, captures_mode, capture_names, checks, python_checked) -> "
     "matches, or (captures dict, matches left to Python)"},
    {"query_required_kinds", query_required_kinds, METH_O,
     "query_required_kinds(query) -> per pattern, the named kinds every match contains"},
    {"record_matches", record_matches, METH_VARARGS,
     "record_matches(path, source, events, capture_names, kind_names, match_type, checks) "
     "-> [match_type(path, pattern, {name: [Capture]})]"},
    {"colq_cursor", colq_cursor, METH_NOARGS, "colq_cursor() -> a query cursor for colq_exec"},
    {"colq_exec", colq_exec, METH_VARARGS,
     "colq_exec(cursor, query, tree, status, node_index, captures_mode, match_limit, max_start_depth, "
     "byte_range, containing_byte_range, source=None) -> (int32 events, did_exceed_match_limit)"
     " or None when the stored columns cannot answer (the caller re-parses)"},
    {NULL, NULL, 0, NULL},
};
