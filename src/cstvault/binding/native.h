/* cstvault._native: what its C files share. One file per concern, as py-tree-sitter's
 * binding is laid out: extract.c (parse + walk -> columns), codec.c (record <-> columns),
 * tree.c (TreeBase, open_tree), node.c (NodeBase), cursor.c (TreeCursor), pathindex.c
 * (paths.idx lookups), query.c (tree-sitter queries, re-parsing), colquery.c (tree-sitter's
 * query cursor over stored columns), capture.c (Capture), module.c (the module). */
#ifndef CSTVAULT_NATIVE_H
#define CSTVAULT_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include "structmember.h"

#include "tree_sitter/api.h"

/* node flag bits (columns.py, docs/format.md) */
#define HAS_CHILDREN 0x01
#define NAMED 0x02
#define EXTRA 0x04
#define MISSING 0x08
#define HAS_FIELD 0x10
#define HAS_ERROR 0x20
#define EXPLICIT 0x40
#define UNEXPECTED 0x80
#define ERROR_SYMBOL 0xFFFF

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
    PyObject *ids; /* stable node ids: None, an int32 array, or where to fetch them */
} TreeBase;

/* A position offset (Tree.root_node_with_offset): bytes, and the extent added to points
 * (rows add; columns add on the first row only), as tree-sitter's Length addition. */
typedef struct {
    uint32_t bytes, row, column;
} Offset;

typedef struct {
    PyObject_HEAD
    TreeBase *tree;
    Py_ssize_t i;
    Offset off;
} NodeBase;

extern PyTypeObject TreeBaseType, NodeBaseType, CursorType, CaptureType;

/* capture.c: a Capture over a file's source bytes: r = start, end, start row, start column,
 * end row, end column */
PyObject *capture_new(PyObject *type, PyObject *source, const int32_t r[6]);

/* extract.c: a pool of parsers per grammar, taken and given back with the GIL held */
TSParser *take_parser(const TSLanguage *lang);
void give_parser(const TSLanguage *lang, TSParser *p);
/* parse a buffer (released) with a pooled parser, reusing an edited old tree if given */
TSTree *parse_buffer(const TSLanguage *lang, Py_buffer *src, const TSTree *old);
/* a parsed tree's columns (and with a query its record events), as parse_extract returns */
PyObject *extract_tree(TSTree *tree, const TSQuery *query);

/* little-endian reads */
static inline uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t le16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline int64_t le64s(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return v; }

/* codec.c */
#define NCOLS 14 /* the decoder's buffers (decode_body) */
const char *decode_columns(const uint8_t *buf, Py_ssize_t reclen, int version, Py_ssize_t body,
                           Py_ssize_t n, Py_ssize_t kinds, int hflags, Py_ssize_t phantom_len,
                           long long source_len, const int16_t *token_len, long kind_limit,
                           long field_limit, PyObject *cols[NCOLS]);
extern PyObject *Corrupt, *EncodeErr;
PyObject *corrupt(const char *msg);
PyObject *new_bytes(Py_ssize_t len, void **data);

/* tree.c: a node handle; make_node_off gives it an offset (descendants keep their
 * ancestor's, parents and siblings are found from the root and have none, as in tree-sitter) */
PyObject *make_node(TreeBase *t, Py_ssize_t i);
PyObject *make_node_off(TreeBase *t, Py_ssize_t i, Offset off);

/* node.c: points as doubled byte offsets ordered as points are (2 * byte; past the end of a
 * line, one more than twice its last byte) */
int point_keys(TreeBase *t, const long long *rows, const long long *cols, int count, uint64_t *keys);
/* a point of the offset space as a key of the tree's own (-1: before its start) */
int offset_point_key(TreeBase *t, Offset off, long long row, long long col, int64_t *key);

/* query.c: growable int32 arrays (raw memory: filled without the GIL by parse_extract);
 * a compiled query's capsule; a query's matches as records */
typedef struct {
    int32_t *v;
    size_t n, cap;
} Ints;
int push(Ints *a, int32_t x);
#define ints_free(a) PyMem_RawFree((a)->v)
#define QUERY_CAPSULE "cstvault.TSQuery"
TSQuery *query_of(PyObject *capsule);
int query_records(const TSQuery *q, TSNode node, Ints *ev);

/* the module's functions, by file */
PyObject *parse_extract(PyObject *self, PyObject *args);
PyObject *py_structure(PyObject *self, PyObject *args);
PyObject *decode_body(PyObject *self, PyObject *args);
PyObject *encode_body(PyObject *self, PyObject *args);
PyObject *open_tree(PyObject *self, PyObject *args);
PyObject *path_hashes(PyObject *self, PyObject *arg);
PyObject *find_path(PyObject *self, PyObject *args);
PyObject *line_starts(PyObject *self, PyObject *arg);
PyObject *points(PyObject *self, PyObject *args);
PyObject *definition_rows(PyObject *self, PyObject *args);
extern PyMethodDef query_methods[], colquery_methods[], live_methods[], stable_methods[],
    crc_methods[];
/* crc.c: CRC32C continuing from `value` (0 to start), hardware where the CPU has it */
uint32_t crc32c_update(uint32_t value, const void *data, size_t n);

#endif
