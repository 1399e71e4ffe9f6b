
/*
 * Copyright (C) kroute authors
 */


/*
 * A validating JSON scanner that never allocates: it walks a contiguous
 * buffer and hands out spans into it.  kroute uses it to read request and
 * response bodies without building a tree, so that a large prompt costs
 * one linear pass and the "model" field can be rewritten in place.
 */


#ifndef _KR_JSON_H_INCLUDED_
#define _KR_JSON_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define KR_JSON_MAX_DEPTH  64


typedef struct {
    size_t                len;
    const unsigned char  *data;
} kr_str_t;


typedef struct {
    const unsigned char  *p;
    const unsigned char  *end;
    unsigned char         type;      /* '{' or '[' */
    unsigned char         state;     /* 0 first, 1 after member, 2 done */
    unsigned char         valid;     /* buffer already validated */
} kr_json_iter_t;


/* 0 if [p, p + len) is exactly one JSON value (RFC 8259), -1 otherwise */
int kr_json_validate(const unsigned char *p, size_t len, size_t *err_off);

/* skips whitespace and one value; returns the byte after it or NULL */
const unsigned char *kr_json_skip(const unsigned char *p,
    const unsigned char *end);

/* whitespace-trimmed span of one value; 0 ok, -1 if not a single value */
int kr_json_value(const unsigned char *p, size_t len, kr_str_t *out);

int kr_json_iter_init(kr_json_iter_t *it, const kr_str_t *container);

/*
 * The same for a container inside a buffer that kr_json_validate()
 * accepted: the iterators then skip values at memchr() speed instead of
 * checking them again.  On any other input they stay within the buffer
 * but the spans they return mean nothing.
 */
int kr_json_iter_init_valid(kr_json_iter_t *it, const kr_str_t *container);
int kr_json_object_next(kr_json_iter_t *it, kr_str_t *key, kr_str_t *value);
int kr_json_array_next(kr_json_iter_t *it, kr_str_t *value);

/* end of the container after iteration returned 0 (past '}' or ']') */
#define kr_json_iter_end(it)  ((it)->p)

int kr_json_key_eq(const kr_str_t *key, const char *s);
int kr_json_key_eqn(const kr_str_t *key, const char *s, size_t n);

int kr_json_is_null(const kr_str_t *v);
int kr_json_is_true(const kr_str_t *v);
int kr_json_is_false(const kr_str_t *v);
int kr_json_is_string(const kr_str_t *v);
int kr_json_is_object(const kr_str_t *v);
int kr_json_is_array(const kr_str_t *v);

int kr_json_int(const kr_str_t *v, int64_t *out);

/*
 * Decodes a string, given raw with or without its quotes, into UTF-8.
 * Never writes a partial character; returns the number of bytes written.
 */
size_t kr_json_string_decode(const kr_str_t *raw, unsigned char *dst,
    size_t size);

/* length the decoded string would have */
size_t kr_json_string_decoded_len(const kr_str_t *raw);

/*
 * Decodes one character at *p (inside a string body) into out[4],
 * advances *p and returns the byte count (0 at end).  Broken escapes
 * and lone surrogates come out as U+FFFD.
 */
size_t kr_json_char_next(const unsigned char **p, const unsigned char *end,
    unsigned char *out);

/* 1 found, 0 not found, -1 malformed object or path */
int kr_json_lookup(const kr_str_t *obj, const char *dotted_path,
    kr_str_t *out);


#endif /* _KR_JSON_H_INCLUDED_ */
