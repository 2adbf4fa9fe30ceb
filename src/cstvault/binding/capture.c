/* cstvault._native, captures: `Capture`, a node captured by a whole-store query, as plain
 * data. One small object a capture (whole-store answers make hundreds of thousands): the
 * type name is shared, the text is sliced from the file's source when asked for, and the
 * points are made on access. It reads like the 6-tuple (type, start_byte, end_byte,
 * start_point, end_point, text) it stands for: fields by name, by index and by unpacking,
 * equality and hash over those fields, pickling. */
#include "native.h"

typedef struct {
    PyObject_HEAD
    PyObject *type;   /* str */
    PyObject *source; /* bytes holding the text at [start - base, end - base) */
    uint32_t start, end, base, srow, scol, erow, ecol;
} CaptureObject;

static PyObject *capture_text(CaptureObject *c, void *unused) {
    return PyBytes_FromStringAndSize(PyBytes_AS_STRING(c->source) + (c->start - c->base),
                                     (Py_ssize_t)(c->end - c->start));
}

static PyObject *pair(uint32_t a, uint32_t b) { return Py_BuildValue("(II)", a, b); }

static PyObject *capture_item(CaptureObject *c, Py_ssize_t k) {
    switch (k) {
        case 0: return Py_NewRef(c->type);
        case 1: return PyLong_FromUnsignedLong(c->start);
        case 2: return PyLong_FromUnsignedLong(c->end);
        case 3: return pair(c->srow, c->scol);
        case 4: return pair(c->erow, c->ecol);
        case 5: return capture_text(c, NULL);
        default: PyErr_SetString(PyExc_IndexError, "Capture index out of range"); return NULL;
    }
}

static PyObject *capture_tuple(CaptureObject *c) {
    PyObject *t = PyTuple_New(6);
    for (Py_ssize_t k = 0; t && k < 6; k++) {
        PyObject *v = capture_item(c, k);
        if (!v) { Py_CLEAR(t); break; }
        PyTuple_SET_ITEM(t, k, v);
    }
    return t;
}

/* A capture over `source` (the whole file: base 0); the caller checked the ranges. */
PyObject *capture_new(PyObject *type, PyObject *source, const int32_t r[7]) {
    CaptureObject *c = PyObject_New(CaptureObject, &CaptureType);
    if (!c) return NULL;
    c->type = Py_NewRef(type);
    c->source = Py_NewRef(source);
    c->start = (uint32_t)r[0]; c->end = (uint32_t)r[1]; c->base = 0;
    c->srow = (uint32_t)r[2]; c->scol = (uint32_t)r[3]; c->erow = (uint32_t)r[4]; c->ecol = (uint32_t)r[5];
    return (PyObject *)c;
}

static PyObject *capture_py_new(PyTypeObject *tp, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"type", "start_byte", "end_byte", "start_point", "end_point", "text", NULL};
    PyObject *type;
    unsigned int start, end, sr, sc, er, ec;
    Py_buffer text;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UII(II)(II)y*", kwlist, &type, &start, &end, &sr, &sc,
                                     &er, &ec, &text))
        return NULL;
    if (end < start || text.len != (Py_ssize_t)(end - start)) {
        PyBuffer_Release(&text);
        PyErr_SetString(PyExc_ValueError, "text length must be end_byte - start_byte");
        return NULL;
    }
    PyObject *src = PyBytes_FromStringAndSize(text.buf, text.len);
    PyBuffer_Release(&text);
    if (!src) return NULL;
    CaptureObject *c = (CaptureObject *)tp->tp_alloc(tp, 0);
    if (!c) { Py_DECREF(src); return NULL; }
    c->type = Py_NewRef(type);
    c->source = src;
    c->start = start; c->end = end; c->base = start;
    c->srow = sr; c->scol = sc; c->erow = er; c->ecol = ec;
    return (PyObject *)c;
}

static void capture_dealloc(CaptureObject *c) {
    Py_XDECREF(c->type);
    Py_XDECREF(c->source);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static Py_ssize_t capture_len(PyObject *c) { return 6; }

static PyObject *capture_richcompare(PyObject *a, PyObject *b, int op) {
    if (!PyObject_TypeCheck(b, &CaptureType) && !PyTuple_Check(b)) Py_RETURN_NOTIMPLEMENTED;
    PyObject *ta = capture_tuple((CaptureObject *)a);
    PyObject *tb = PyTuple_Check(b) ? Py_NewRef(b) : capture_tuple((CaptureObject *)b);
    PyObject *out = ta && tb ? PyObject_RichCompare(ta, tb, op) : NULL;
    Py_XDECREF(ta);
    Py_XDECREF(tb);
    return out;
}

static Py_hash_t capture_hash(CaptureObject *c) {
    PyObject *t = capture_tuple(c);
    Py_hash_t h = t ? PyObject_Hash(t) : -1;
    Py_XDECREF(t);
    return h;
}

static PyObject *capture_repr(CaptureObject *c) {
    PyObject *text = capture_text(c, NULL);
    PyObject *out = text ? PyUnicode_FromFormat(
        "Capture(type=%R, start_byte=%u, end_byte=%u, start_point=(%u, %u), end_point=(%u, %u), text=%R)",
        c->type, c->start, c->end, c->srow, c->scol, c->erow, c->ecol, text) : NULL;
    Py_XDECREF(text);
    return out;
}

static PyObject *capture_reduce(CaptureObject *c, PyObject *unused) {
    PyObject *t = capture_tuple(c);
    return t ? Py_BuildValue("(ON)", (PyObject *)Py_TYPE(c), t) : NULL;
}

static PyObject *get_type(CaptureObject *c, void *u) { return Py_NewRef(c->type); }
static PyObject *get_start(CaptureObject *c, void *u) { return PyLong_FromUnsignedLong(c->start); }
static PyObject *get_end(CaptureObject *c, void *u) { return PyLong_FromUnsignedLong(c->end); }
static PyObject *get_sp(CaptureObject *c, void *u) { return pair(c->srow, c->scol); }
static PyObject *get_ep(CaptureObject *c, void *u) { return pair(c->erow, c->ecol); }

static PyGetSetDef capture_getset[] = {
    {"type", (getter)get_type, NULL, "The node's type.", NULL},
    {"start_byte", (getter)get_start, NULL, NULL, NULL},
    {"end_byte", (getter)get_end, NULL, NULL, NULL},
    {"start_point", (getter)get_sp, NULL, "(row, column)", NULL},
    {"end_point", (getter)get_ep, NULL, "(row, column)", NULL},
    {"text", (getter)capture_text, NULL, "The node's source bytes.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef capture_methods[] = {
    {"__reduce__", (PyCFunction)capture_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods capture_seq = {
    .sq_length = capture_len,
    .sq_item = (ssizeargfunc)capture_item,
};

PyTypeObject CaptureType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cstvault.Capture",
    .tp_doc = "Capture(type, start_byte, end_byte, start_point, end_point, text): a captured "
              "node as plain data (whole-store answers: no tree is kept).",
    .tp_basicsize = sizeof(CaptureObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = capture_py_new,
    .tp_dealloc = (destructor)capture_dealloc,
    .tp_repr = (reprfunc)capture_repr,
    .tp_hash = (hashfunc)capture_hash,
    .tp_richcompare = capture_richcompare,
    .tp_as_sequence = &capture_seq,
    .tp_getset = capture_getset,
    .tp_methods = capture_methods,
};
