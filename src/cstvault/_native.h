/* cstvault._native: what its C files share (one file per concern: _native.c holds the
 * extraction, codec, tree, node and cursor types and the path index; _query.c the queries). */
#ifndef CSTVAULT_NATIVE_H
#define CSTVAULT_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "tree_sitter/api.h"

/* A pool of parsers per grammar, taken and given back with the GIL held. */
TSParser *take_parser(const TSLanguage *lang);
void give_parser(const TSLanguage *lang, TSParser *p);

/* The query functions, added to the module by PyInit__native. */
extern PyMethodDef query_methods[];

#endif
