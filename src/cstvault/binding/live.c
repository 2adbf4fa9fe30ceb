/* Live trees: a writer's tree-sitter trees of recently edited files, held as capsules so that
 * an edit re-parses incrementally (ts_tree_edit, then a parse given the old tree), and the
 * ranges tree-sitter reports as changed between two such trees. */
#include "native.h"

#include <errno.h>
#include <pthread.h>

#define LIVE_CAPSULE "cstvault.TSTree"

/* the runtime's allocator (pymalloc here, PyInit__native): changed ranges are freed with it */
extern void (*ts_current_free)(void *ptr);

static void live_free(PyObject *capsule) {
    TSTree *t = PyCapsule_GetPointer(capsule, LIVE_CAPSULE);
    if (t) ts_tree_delete(t);
}

static TSTree *live_of(PyObject *capsule) { return PyCapsule_GetPointer(capsule, LIVE_CAPSULE); }

/* live_parse(source, language_capsule, old=None, query=None, extract=True) -> (tree capsule,
 * extract tuple or None). `old` must have been edited to match `source` (live_edit); it is
 * left unchanged. */
static PyObject *live_parse(PyObject *self, PyObject *args) {
    Py_buffer src;
    PyObject *capsule, *oldcap = Py_None, *qcap = Py_None;
    int extract = 1;
    if (!PyArg_ParseTuple(args, "y*O|OOp", &src, &capsule, &oldcap, &qcap, &extract)) return NULL;
    const TSLanguage *lang = PyCapsule_GetPointer(capsule, "tree_sitter.Language");
    TSTree *old = lang && oldcap != Py_None ? live_of(oldcap) : NULL;
    const TSQuery *query = lang && qcap != Py_None ? query_of(qcap) : NULL;
    if (!lang || (oldcap != Py_None && !old) || (qcap != Py_None && !query)) {
        PyBuffer_Release(&src);
        return NULL;
    }
    TSTree *tree = parse_buffer(lang, &src, old);
    if (!tree) return NULL;
    PyObject *cap = PyCapsule_New(tree, LIVE_CAPSULE, live_free);
    if (!cap) { ts_tree_delete(tree); return NULL; }
    if (!extract) return Py_BuildValue("(NO)", cap, Py_None);
    PyObject *cols = extract_tree(tree, query);
    if (!cols) { Py_DECREF(cap); return NULL; }
    return Py_BuildValue("(NN)", cap, cols);
}

/* live_extract(tree, query=None) -> parse_extract tuple of a live tree */
static PyObject *live_extract(PyObject *self, PyObject *args) {
    PyObject *capsule, *qcap = Py_None;
    if (!PyArg_ParseTuple(args, "O|O", &capsule, &qcap)) return NULL;
    TSTree *t = live_of(capsule);
    const TSQuery *query = t && qcap != Py_None ? query_of(qcap) : NULL;
    if (!t || (qcap != Py_None && !query)) return NULL;
    return extract_tree(t, query);
}

/* live_edit(tree, start_byte, old_end_byte, new_end_byte, start_row, start_col, old_end_row,
 * old_end_col, new_end_row, new_end_col): ts_tree_edit, in place */
static PyObject *live_edit(PyObject *self, PyObject *args) {
    PyObject *capsule;
    unsigned int v[9];
    if (!PyArg_ParseTuple(args, "OIIIIIIIII", &capsule, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                          &v[6], &v[7], &v[8]))
        return NULL;
    TSTree *t = live_of(capsule);
    if (!t) return NULL;
    TSInputEdit e = {v[0], v[1], v[2], {v[3], v[4]}, {v[5], v[6]}, {v[7], v[8]}};
    ts_tree_edit(t, &e);
    Py_RETURN_NONE;
}

/* live_changed_ranges(old, new) -> [(start_byte, end_byte, start_row, start_col, end_row,
 * end_col)], tree-sitter's ts_tree_get_changed_ranges (old edited, new parsed from it) */
static PyObject *live_changed_ranges(PyObject *self, PyObject *args) {
    PyObject *a, *b;
    if (!PyArg_ParseTuple(args, "OO", &a, &b)) return NULL;
    TSTree *old = live_of(a), *new = old ? live_of(b) : NULL;
    if (!old || !new) return NULL;
    uint32_t n = 0;
    TSRange *r = ts_tree_get_changed_ranges(old, new, &n);
    PyObject *out = PyList_New(n);
    for (uint32_t k = 0; out && k < n; k++) {
        PyObject *item = Py_BuildValue("(IIIIII)", r[k].start_byte, r[k].end_byte,
                                       r[k].start_point.row, r[k].start_point.column,
                                       r[k].end_point.row, r[k].end_point.column);
        if (!item) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, k, item);
    }
    ts_current_free(r);
    return out;
}

/* A journal's fdatasync on a thread of its own, so that the writer's catalog work (Python,
 * holding the GIL) overlaps it; the caller waits for it before its COMMIT. */
typedef struct {
    pthread_t thread;
    int fd, err, started;
} SyncJob;

static void *sync_run(void *arg) {
    SyncJob *job = arg;
    job->err = fdatasync(job->fd) == 0 ? 0 : errno;
    return NULL;
}

static void sync_free(PyObject *capsule) {
    SyncJob *job = PyCapsule_GetPointer(capsule, "cstvault.SyncJob");
    if (!job) return;
    if (job->started) pthread_join(job->thread, NULL);
    PyMem_Free(job);
}

/* fdatasync_start(fd) -> job: fdatasync(fd) running on a new thread */
static PyObject *fdatasync_start(PyObject *self, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd < 0 && PyErr_Occurred()) return NULL;
    SyncJob *job = PyMem_Calloc(1, sizeof *job);
    if (!job) return PyErr_NoMemory();
    job->fd = fd;
    PyObject *cap = PyCapsule_New(job, "cstvault.SyncJob", sync_free);
    if (!cap) { PyMem_Free(job); return NULL; }
    if (pthread_create(&job->thread, NULL, sync_run, job) != 0) {
        job->err = fdatasync(fd) == 0 ? 0 : errno; /* no thread: do it here */
    } else {
        job->started = 1;
    }
    return cap;
}

/* fdatasync_wait(job): wait for it; OSError if fdatasync failed */
static PyObject *fdatasync_wait(PyObject *self, PyObject *cap) {
    SyncJob *job = PyCapsule_GetPointer(cap, "cstvault.SyncJob");
    if (!job) return NULL;
    if (job->started) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(job->thread, NULL);
        Py_END_ALLOW_THREADS
        job->started = 0;
    }
    if (job->err) { errno = job->err; return PyErr_SetFromErrno(PyExc_OSError); }
    Py_RETURN_NONE;
}

PyMethodDef live_methods[] = {
    {"fdatasync_start", fdatasync_start, METH_O, "fdatasync_start(fd) -> job (a thread)"},
    {"fdatasync_wait", fdatasync_wait, METH_O, "fdatasync_wait(job): join; OSError on failure"},
    {"live_parse", live_parse, METH_VARARGS,
     "live_parse(source, language, old=None, query=None, extract=True) -> (tree capsule, "
     "parse_extract tuple or None)"},
    {"live_extract", live_extract, METH_VARARGS,
     "live_extract(tree, query=None) -> parse_extract tuple of a live tree"},
    {"live_edit", live_edit, METH_VARARGS, "live_edit(tree, 9 edit ints): ts_tree_edit in place"},
    {"live_changed_ranges", live_changed_ranges, METH_VARARGS,
     "live_changed_ranges(old, new) -> [(start, end, srow, scol, erow, ecol)]"},
    {NULL, NULL, 0, NULL},
};
