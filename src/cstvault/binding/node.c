/* cstvault._native, nodes: NodeBase, the flyweight handle cstvault.Node subclasses. */
#include "native.h"

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
static PyObject *node_start(NodeBase *n, void *c) { return PyLong_FromLongLong((long long)T->start[I] + n->off.bytes); }
static PyObject *node_end(NodeBase *n, void *c) { return PyLong_FromLongLong((long long)T->end[I] + n->off.bytes); }
static PyObject *node_byte_range(NodeBase *n, void *c) {
    return Py_BuildValue("(LL)", (long long)T->start[I] + n->off.bytes, (long long)T->end[I] + n->off.bytes);
}
static PyObject *node_offset(NodeBase *n, void *c) {
    if (!n->off.bytes && !n->off.row && !n->off.column) Py_RETURN_NONE;
    return Py_BuildValue("(III)", n->off.bytes, n->off.row, n->off.column);
}
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
        PyObject *c = make_node_off(T, j, n->off);
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

/* tree-sitter's descendant-for-range walk (ts_node_descendant_for_byte_range and its
 * point twin) over the visible children, O(depth x children): at each level the first child
 * that ends after the range (or at it, for an empty child) either contains it (descend) or
 * starts past it (stop). Keys are a node's bytes shifted left by `shift`: 0 for byte ranges;
 * 1 for point ranges, whose ends the caller turns into doubled bytes (a point past the end of
 * its line falls between that line's last byte and the next line's first, an odd key). */
static Py_ssize_t descend(TreeBase *t, Py_ssize_t i, int64_t lo, int64_t hi, int anon,
                          int shift) {
    Py_ssize_t node = i, found = i;
    for (int descended = 1; descended;) {
        descended = 0;
        if (!(t->flags[node] & HAS_CHILDREN)) break;
        Py_ssize_t end = node + t->size[node];
        for (Py_ssize_t j = node + 1; j < end; j += t->size[j]) {
            int64_t s = (int64_t)t->start[j] << shift, e = (int64_t)t->end[j] << shift;
            if (e < hi || (s == e ? e < lo : e <= lo)) continue;
            if (lo < s) break;
            node = j;
            if (anon || (t->flags[j] & NAMED)) found = j;
            descended = 1;
            break;
        }
    }
    return found;
}

#define T (n->tree)
#define I (n->i)

/* The tree's source as a buffer: the bytes it holds, else its `_source` (which resolves a
 * deferred working-tree read and keeps the bytes). 0, or -1 with an exception set. */
static int source_buffer(TreeBase *t, Py_buffer *view) {
    if (t->src && PyBytes_CheckExact(t->src)) return PyObject_GetBuffer(t->src, view, PyBUF_SIMPLE);
    PyObject *src = PyObject_GetAttrString((PyObject *)t, "_source");
    if (!src) return -1;
    int rc = PyObject_GetBuffer(src, view, PyBUF_SIMPLE);
    Py_DECREF(src);
    return rc;
}

/* node.text: the node's bytes, sliced in C (py-tree-sitter's Node.text does the same). */
static PyObject *node_text(NodeBase *n, void *c) {
    Py_buffer v;
    if (source_buffer(T, &v) < 0) return NULL;
    /* py-tree-sitter slices the source at the node's (possibly offset) bytes, clamped */
    Py_ssize_t s = (Py_ssize_t)T->start[I] + n->off.bytes, e = (Py_ssize_t)T->end[I] + n->off.bytes;
    if (e > v.len) e = v.len;
    if (s > e) s = e;
    PyObject *out = PyBytes_FromStringAndSize((const char *)v.buf + s, e - s);
    PyBuffer_Release(&v);
    return out;
}

/* line_starts(source) -> int64 offsets (bytes) of the start of every line: 0, then one past
 * each '\n' (tree-sitter counts rows by '\n' alone). */
PyObject *line_starts(PyObject *self, PyObject *arg) {
    Py_buffer v;
    if (PyObject_GetBuffer(arg, &v, PyBUF_SIMPLE) < 0) return NULL;
    const char *s = v.buf, *e = s + v.len;
    Py_ssize_t n = 1;
    for (const char *p = s; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++) n++;
    void *data;
    PyObject *out = new_bytes(8 * n, &data);
    if (out) {
        int64_t *o = data;
        *o++ = 0;
        for (const char *p = s; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++) *o++ = p - s + 1;
    }
    PyBuffer_Release(&v);
    return out;
}

/* points(source, offsets) -> [(row, column)] of byte offsets (rows counted by '\n'), with
 * one scan of the source and a binary search per offset. */
PyObject *points(PyObject *self, PyObject *args) {
    Py_buffer v;
    PyObject *offs;
    if (!PyArg_ParseTuple(args, "y*O!", &v, &PyList_Type, &offs)) return NULL;
    PyObject *lines_obj = line_starts(self, PyTuple_GET_ITEM(args, 0));
    PyObject *out = lines_obj ? PyList_New(PyList_GET_SIZE(offs)) : NULL;
    if (out) {
        const int64_t *lines = (const int64_t *)PyBytes_AS_STRING(lines_obj);
        Py_ssize_t nl = PyBytes_GET_SIZE(lines_obj) / 8;
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(offs); k++) {
            long long b = PyLong_AsLongLong(PyList_GET_ITEM(offs, k));
            if (b == -1 && PyErr_Occurred()) { Py_CLEAR(out); break; }
            Py_ssize_t lo = 0, hi = nl; /* the last line start <= b */
            while (hi - lo > 1) {
                Py_ssize_t mid = (lo + hi) / 2;
                if (lines[mid] <= b) lo = mid; else hi = mid;
            }
            PyObject *pt = Py_BuildValue("(nL)", lo, b - lines[lo]);
            if (!pt) { Py_CLEAR(out); break; }
            PyList_SET_ITEM(out, k, pt);
        }
    }
    Py_XDECREF(lines_obj);
    PyBuffer_Release(&v);
    return out;
}

/* A point as a doubled byte offset, ordered as points are: 2 * its byte or, past the end of
 * its line, one more than twice the line's last byte (beyond the last line: past the
 * end). `lines` are the line starts (Tree._line_starts), `len` the source length. */
static uint64_t point_key(const int64_t *lines, Py_ssize_t nlines, Py_ssize_t len, uint64_t row,
                          uint64_t col) {
    if (row >= (uint64_t)nlines) return 2 * (uint64_t)len + 1;
    uint64_t start = (uint64_t)lines[row];
    uint64_t last = row + 1 < (uint64_t)nlines ? (uint64_t)lines[row + 1] - 1 : (uint64_t)len;
    return col <= last - start ? 2 * (start + col) : 2 * last + 1;
}

/* The keys (point_key) of points of a tree, from its line starts (made on first use) and
 * its text's length. 0, or -1 with an exception set. */
int point_keys(TreeBase *t, const long long *rows, const long long *cols, int count, uint64_t *keys) {
    if (!t->lines_mv) {
        PyObject *made = PyObject_CallMethod((PyObject *)t, "_line_starts", NULL);
        if (!made) return -1;
        Py_DECREF(made);
    }
    Py_buffer lb, v;
    if (PyObject_GetBuffer(t->lines_mv, &lb, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (source_buffer(t, &v) < 0) { PyBuffer_Release(&lb); return -1; }
    for (int k = 0; k < count; k++)
        keys[k] = point_key(lb.buf, lb.len / 8, v.len, (uint64_t)rows[k], (uint64_t)cols[k]);
    PyBuffer_Release(&v);
    PyBuffer_Release(&lb);
    return 0;
}

int offset_point_key(TreeBase *t, Offset off, long long row, long long col, int64_t *key) {
    if (row < off.row || (row == off.row && col < off.column)) { *key = -1; return 0; }
    long long raw_row = row - off.row, raw_col = row == off.row ? col - off.column : col;
    uint64_t k;
    if (point_keys(t, &raw_row, &raw_col, 1, &k) < 0) return -1;
    *key = (int64_t)k;
    return 0;
}

static PyObject *point_range(NodeBase *n, PyObject *args, int anon) {
    long long r[2], c[2];
    if (!PyArg_ParseTuple(args, "(LL)(LL)", &r[0], &c[0], &r[1], &c[1])) return NULL;
    if (r[0] > r[1] || (r[0] == r[1] && c[0] > c[1]) || r[0] < 0 || c[0] < 0 || r[1] < 0 || c[1] < 0)
        Py_RETURN_NONE;
    int64_t lo, hi;
    if (offset_point_key(T, n->off, r[0], c[0], &lo) < 0 || offset_point_key(T, n->off, r[1], c[1], &hi) < 0)
        return NULL;
    return make_node_off(T, descend(T, I, lo, hi, anon, 1), n->off);
}

static PyObject *byte_range(NodeBase *n, PyObject *args, int anon) {
    long long lo, hi;
    if (!PyArg_ParseTuple(args, "LL", &lo, &hi)) return NULL;
    if (lo > hi || lo < 0) Py_RETURN_NONE;
    lo -= n->off.bytes; /* the tree's own bytes; a start before the root's stays below all */
    hi -= n->off.bytes;
    return make_node_off(T, descend(T, I, lo < 0 ? -1 : lo, hi < 0 ? -1 : hi, anon, 0), n->off);
}

/* _at(index): the node at a preorder index with this node's offset (its descendants') */
static PyObject *node_at(NodeBase *n, PyObject *arg) {
    Py_ssize_t j = PyLong_AsSsize_t(arg);
    if (j == -1 && PyErr_Occurred()) return NULL;
    if (j < 0 || j >= T->n) { PyErr_SetString(PyExc_IndexError, "node index out of range"); return NULL; }
    return make_node_off(T, j, n->off);
}

static PyObject *node_point_any(NodeBase *n, PyObject *a) { return point_range(n, a, 1); }
static PyObject *node_point_named(NodeBase *n, PyObject *a) { return point_range(n, a, 0); }
static PyObject *node_byte_any(NodeBase *n, PyObject *a) { return byte_range(n, a, 1); }
static PyObject *node_byte_named(NodeBase *n, PyObject *a) { return byte_range(n, a, 0); }

#undef T
#undef I

static PyMethodDef node_methods[] = {
    {"_at", (PyCFunction)node_at, METH_O, "The node at a preorder index, with this node's offset."},
    {"descendant_for_point_range", (PyCFunction)node_point_any, METH_VARARGS,
     "The smallest node spanning the points (start_point, end_point), or None."},
    {"named_descendant_for_point_range", (PyCFunction)node_point_named, METH_VARARGS,
     "The smallest named node spanning the points, or None."},
    {"descendant_for_byte_range", (PyCFunction)node_byte_any, METH_VARARGS,
     "The smallest node spanning the bytes (start_byte, end_byte), or None."},
    {"named_descendant_for_byte_range", (PyCFunction)node_byte_named, METH_VARARGS,
     "The smallest named node spanning the bytes, or None."},
    {NULL, NULL, 0, NULL},
};

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
    {"_offset", (getter)node_offset, NULL, "(bytes, row, column) of root_node_with_offset, or None", NULL},
    {"text", (getter)node_text, NULL, "The node's source bytes.", NULL},
    {"_t", (getter)node_tree, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NodeBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cstvault._native.NodeBase",
    .tp_basicsize = sizeof(NodeBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = node_new,
    .tp_dealloc = (destructor)node_dealloc,
    .tp_getset = node_getset,
    .tp_members = node_members,
    .tp_methods = node_methods,
    .tp_hash = (hashfunc)node_hash,
    .tp_richcompare = node_richcompare,
};
