/* cstvault._native, cursors: TreeCursor, as in py-tree-sitter. */
#include "native.h"

/* --- cursor --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    TreeBase *tree;
    Py_ssize_t root, i, sp, cap;
    Py_ssize_t *stack; /* ancestors of i below root (exclusive of i) */
    Offset off;        /* the root node's (root_node_with_offset), kept by every node */
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
    dst->off = src->off;
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
    Offset off = {0, 0, 0};
    if (!PyArg_ParseTuple(args, "O!|n(III)", &TreeBaseType, &tree, &index, &off.bytes, &off.row, &off.column))
        return NULL;
    TreeBase *t = (TreeBase *)tree;
    if (!t->bound || index < 0 || index >= t->n) { PyErr_SetString(PyExc_IndexError, "node index out of range"); return NULL; }
    Cursor *c = (Cursor *)type->tp_alloc(type, 0);
    if (!c) return NULL;
    c->tree = (TreeBase *)Py_NewRef(tree);
    c->root = c->i = index;
    c->off = off;
    return (PyObject *)c;
}

static void cursor_dealloc(Cursor *c) {
    Py_XDECREF(c->tree);
    PyMem_Free(c->stack);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

#define CT (c->tree)
static PyObject *cursor_node(Cursor *c, void *x) { return make_node_off(CT, c->i, c->off); }
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
/* ts_tree_cursor_goto_first_child_for_byte / _for_point: the first child that ends past
 * the goal (keys: bytes, shift 0; or doubled bytes for points, shift 1). tree-sitter walks
 * invisible groups too, and fails when the goal lies in the tail of one (past its last
 * visible child, before its end): that can only happen when the goal falls in a gap before
 * the child found, and the record keeps those tails (Tree._tails). */
static PyObject *first_child_for(Cursor *c, int64_t goal, int shift) {
    Py_ssize_t i = c->i;
    if (!(CT->flags[i] & HAS_CHILDREN)) Py_RETURN_NONE;
    Py_ssize_t end = i + CT->size[i], k = 0, j = i + 1;
    for (; j < end; j += CT->size[j], k++)
        if (((int64_t)CT->end[j] << shift) > goal && (int64_t)CT->end[j] + c->off.bytes > 0) break;
    if (j >= end) Py_RETURN_NONE;
    if (((int64_t)CT->start[j] << shift) > goal) {
        PyObject *tails = PyObject_GetAttrString((PyObject *)CT, "_tails");
        if (!tails) return NULL;
        if (tails != Py_None) {
            Py_buffer b;
            if (PyObject_GetBuffer(tails, &b, PyBUF_C_CONTIGUOUS) < 0) { Py_DECREF(tails); return NULL; }
            const uint32_t *t = b.buf;
            Py_ssize_t nt = b.len / 8, lo = 0, hi = nt;
            while (lo < hi) { /* the first pair past node i */
                Py_ssize_t mid = (lo + hi) / 2;
                if ((Py_ssize_t)t[2 * mid] <= i) lo = mid + 1; else hi = mid;
            }
            int fails = 0;
            for (; lo < nt && (Py_ssize_t)t[2 * lo] < j && !fails; lo++) {
                Py_ssize_t node = t[2 * lo];
                fails = CT->parent[node] == i && ((int64_t)CT->end[node] << shift) <= goal &&
                        goal < ((int64_t)t[2 * lo + 1] << shift);
            }
            PyBuffer_Release(&b);
            if (fails) { Py_DECREF(tails); Py_RETURN_NONE; }
        }
        Py_DECREF(tails);
    }
    if (cursor_push(c, i) < 0) return NULL;
    c->i = j;
    return PyLong_FromSsize_t(k);
}

static PyObject *cursor_first_child_for_byte(Cursor *c, PyObject *arg) {
    long long byte = PyLong_AsLongLong(arg);
    if (byte == -1 && PyErr_Occurred()) return NULL;
    if (byte < 0) { PyErr_SetString(PyExc_OverflowError, "can't convert negative int to unsigned"); return NULL; }
    byte -= c->off.bytes; /* the tree's own bytes (negative: before its start) */
    return first_child_for(c, byte < 0 ? -1 : byte, 0);
}

static PyObject *cursor_first_child_for_point(Cursor *c, PyObject *arg) {
    long long row, col;
    if (!PyArg_ParseTuple(arg, "LL", &row, &col)) return NULL;
    if (row < 0 || col < 0) { PyErr_SetString(PyExc_OverflowError, "can't convert negative int to unsigned"); return NULL; }
    int64_t key;
    if (offset_point_key(CT, c->off, row, col, &key) < 0) return NULL;
    return first_child_for(c, key, 1);
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
    c->off = ((NodeBase *)arg)->off;
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
    {"goto_first_child_for_point", (PyCFunction)cursor_first_child_for_point, METH_O, NULL},
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
PyTypeObject CursorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cstvault.TreeCursor",
    .tp_basicsize = sizeof(Cursor),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "TreeCursor(tree, index=0): a cursor rooted at a node, as in py-tree-sitter.",
    .tp_new = cursor_new,
    .tp_dealloc = (destructor)cursor_dealloc,
    .tp_methods = cursor_methods,
    .tp_getset = cursor_getset,
};
