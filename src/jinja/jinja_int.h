/* jinja_int.h -- private to src/jinja: the syntax tree that parse.c builds
 * and render.c walks, and the template's arena.
 *
 * One node type for statements and expressions; the fields a kind uses are
 * written beside the enum. Nodes and their strings live in the template's
 * arena and die with it; the tree is never changed after compile.
 */
#ifndef JINJA_INT_H
#define JINJA_INT_H

#include <stddef.h>
#include <stdint.h>

#include "jinja/jinja.h"

enum {
    /* statements */
    N_BODY,     /* kids: statements */
    N_TEXT,     /* s, slen: literal output */
    N_OUT,      /* a: expression printed */
    N_IF,       /* a: condition, b: then body, c: else body (an elif is an N_IF there) or NULL */
    N_FOR,      /* names[nnames]: targets, a: iterable, b: body, c: else body, d: filter or NULL */
    N_SET,      /* s: name, s2: attribute (ns.attr = ...) or NULL, a: value; nnames > 1: tuple target */
    N_SETBLOCK, /* s: name, b: body captured */
    N_MACRO,    /* s: name, names[nnames]: parameters, kids[nnames]: defaults or NULL, b: body */
    N_BREAK,
    N_CONTINUE,
    /* expressions */
    N_STR,    /* s, slen */
    N_INT,    /* i */
    N_FLOAT,  /* f */
    N_BOOL,   /* i */
    N_NONE,
    N_NAME,   /* s */
    N_ATTR,   /* a: object, s: attribute */
    N_ITEM,   /* a: object, b: index */
    N_SLICE,  /* a: object, kids[3]: start, stop, step (each may be NULL) */
    N_CALL,   /* a: callee, kids: arguments, kw[i]: keyword name or NULL */
    N_FILTER, /* a: subject, s: filter, kids/kw: arguments */
    N_TEST,   /* a: subject, s: test, kids: arguments, op: 1 when negated */
    N_BIN,    /* op: one of the B_* below, a, b */
    N_AND,    /* a, b */
    N_OR,     /* a, b */
    N_NOT,    /* a */
    N_NEG,    /* a */
    N_POS,    /* a */
    N_COND,   /* a: value, b: condition, c: else value or NULL (undefined) */
    N_LIST,   /* kids */
    N_TUPLE,  /* kids */
    N_DICT,   /* kids: key, value, key, value... */
};

enum { B_ADD, B_SUB, B_MUL, B_DIV, B_FLOORDIV, B_MOD, B_POW, B_CAT, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE, B_IN, B_NOTIN };

typedef struct jnode jnode;
struct jnode {
    int kind, line, op;
    const char *s, *s2;
    size_t slen;
    int64_t i;
    double f;
    jnode *a, *b, *c, *d;
    jnode **kids;
    const char **kw;
    size_t nk;
    const char **names;
    size_t nnames;
};

/* A chain of blocks; everything in it is freed at once. */
typedef struct jarena_blk jarena_blk;
struct jarena_blk {
    jarena_blk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};
typedef struct jarena {
    jarena_blk *head;
    size_t total;  /* bytes allocated so far */
    size_t limit;  /* 0: none */
    int over;      /* an allocation failed on the limit */
} jarena;

void *jarena_alloc(jarena *a, size_t n); /* zeroed; NULL when out of memory or past the limit */
void jarena_free(jarena *a);

struct jinja_tmpl {
    jarena arena;
    jnode *root;
};

#endif
