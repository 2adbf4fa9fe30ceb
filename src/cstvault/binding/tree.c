/* cstvault._native, trees: TreeBase (column pointers) and open_tree, a record straight to a
 * bound tree (the store's cold-open path). */
#include "native.h"

/* ---------------------------------------------------------------------------------------
 * Read API core: TreeBase (column pointers), NodeBase (flyweight), TreeCursor.
 * The Python classes cstvault.Tree / cstvault.Node subclass the first two.
 * ------------------------------------------------------------------------------------- */


PyObject *make_node_off(TreeBase *t, Py_ssize_t i, Offset off) {
    if (i < 0) Py_RETURN_NONE;
    NodeBase *n = (NodeBase *)t->node_type->tp_alloc(t->node_type, 0);
    if (!n) return NULL;
    Py_INCREF(t);
    n->tree = t;
    n->i = i;
    n->off = off;
    return (PyObject *)n;
}

PyObject *make_node(TreeBase *t, Py_ssize_t i) {
    Offset none = {0, 0, 0};
    return make_node_off(t, i, none);
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
    Py_VISIT(t->structcache); Py_VISIT(t->views); Py_VISIT(t->lines); Py_VISIT(t->lines_mv); Py_VISIT(t->ids);
    return 0;
}

static int tree_clear(TreeBase *t) {
    Py_CLEAR(t->colcache); Py_CLEAR(t->decoded); Py_CLEAR(t->src); Py_CLEAR(t->lang_name);
    Py_CLEAR(t->structcache); Py_CLEAR(t->views); Py_CLEAR(t->lines); Py_CLEAR(t->lines_mv); Py_CLEAR(t->ids);
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

/* root_node_with_offset(offset_bytes, (row, column)): the root, its positions (and its
 * descendants') shifted as tree-sitter's ts_tree_root_node_with_offset shifts them */
static PyObject *tree_root_offset(TreeBase *t, PyObject *args) {
    Offset off;
    if (!PyArg_ParseTuple(args, "I(II)", &off.bytes, &off.row, &off.column)) return NULL;
    if (!t->bound) { PyErr_SetString(PyExc_ValueError, "tree not bound"); return NULL; }
    return make_node_off(t, 0, off);
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
    {"root_node_with_offset", (PyCFunction)tree_root_offset, METH_VARARGS,
     "root_node_with_offset(offset_bytes, offset_extent): the root node, shifted."},
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
    {"_ids", T_OBJECT, offsetof(TreeBase, ids), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject TreeBaseType = {
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

/* ---------------------------------------------------------------------------------------
 * open_tree: a record straight to a bound tree (the store's cold-open path), one call.
 * ------------------------------------------------------------------------------------- */

#define REC_HEAD 25 /* magic 4, version 1, flags 1, nodes 4, source len 4, source crc 4,
                       kinds 2, identity len 1, phantom len 4 (codec/bytecode.py) */

/* open_tree(cls, record, grammars) -> (tree, source_len, source_crc, buffer bytes), or None
 * when the record's grammar identity is not in `grammars` (bytes identity -> (language,
 * token_len int16[65536], kind_limit, field_limit, names, field_names, node_type)) or the
 * record has a phantom section: the caller then takes the general path. The checks are
 * codec.bytecode.read_header's, the record's CRC32C and decode_body's. */
PyObject *open_tree(PyObject *self, PyObject *args) {
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
    if (buf[4] < 1 || buf[4] > 3) return PyErr_Format(Corrupt, "unsupported record format version %d", buf[4]);
    uint8_t hflags = buf[5];
    if (hflags & ~(buf[4] == 3 ? 5 : 3)) return corrupt("unknown header flags");
    uint32_t n = le32(buf + 6), slen = le32(buf + 10), scrc = le32(buf + 14);
    uint16_t kinds = (uint16_t)(buf[18] | buf[19] << 8);
    uint8_t ilen = buf[20];
    uint32_t plen = le32(buf + 21);
    Py_ssize_t body = REC_HEAD + ilen;
    if (n == 0 || body + (Py_ssize_t)n > len || kinds == 0 || kinds > n)
        return corrupt("record truncated or node count out of range");
    for (int k = 0; k < ilen; k++)
        if (buf[REC_HEAD + k] >= 0x80) return corrupt("grammar identity is not ASCII");
    if (crc32c_update(0, buf, (size_t)(len - 4)) != le32(buf + len - 4))
        return corrupt("record checksum (CRC32C) mismatch");
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
        decode_columns(buf, len, buf[4], body, n, kinds, hflags, 0, slen,
                       tok.buf, kind_limit, field_limit, cols);
    PyBuffer_Release(&tok);
    if (err) { if (!PyErr_Occurred()) corrupt(err); goto done; }
    out = PyTuple_New(NCOLS);
    if (!out) goto done;
    Py_ssize_t nbytes = 0;
    for (int k = 0; k < NCOLS; k++) {
        if (k != 8 && cols[k] != Py_None) nbytes += PyBytes_GET_SIZE(cols[k]);
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
