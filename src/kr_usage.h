
/*
 * Copyright (C) kroute authors
 */


/*
 * Token usage as providers report it, read from OpenAI chat-completion
 * and Anthropic Messages replies (whole bodies or streamed events) and
 * normalised to one shape: input total including cache reads and
 * writes, output total including reasoning.  Error bodies map to a
 * class that routing and the counters can act on.
 */


#ifndef _KR_USAGE_H_INCLUDED_
#define _KR_USAGE_H_INCLUDED_


#include "kr_json.h"


#define KR_USAGE_MODEL_LEN   128
#define KR_USAGE_FINISH_LEN  32


typedef enum {
    KR_ERROR_NONE = 0,
    KR_ERROR_RATE_LIMIT,
    KR_ERROR_QUOTA,
    KR_ERROR_CONTEXT_LENGTH,
    KR_ERROR_INVALID_REQUEST,
    KR_ERROR_AUTH,
    KR_ERROR_NOT_FOUND,
    KR_ERROR_UPSTREAM_5XX,
    KR_ERROR_OVERLOADED,
    KR_ERROR_OTHER,
    KR_ERROR_N
} kr_usage_error_e;


typedef struct {
    int64_t   input;          /* prompt total, -1 unknown */
    int64_t   output;         /* completion total, -1 unknown */
    int64_t   cached;         /* cache read, inside input */
    int64_t   cache_write;    /* cache creation, inside input */
    int64_t   reasoning;      /* inside output */
    int       have_usage;

    char      model[KR_USAGE_MODEL_LEN];          /* NUL-terminated */
    char      finish_reason[KR_USAGE_FINISH_LEN]; /* OpenAI names */
    int       error_class;                        /* kr_usage_error_e */

    /* Anthropic fields as reported, latest value each, -1 unknown */
    int64_t   a_input;
    int64_t   a_cache_read;
    int64_t   a_cache_creation;
} kr_usage_t;


void kr_usage_init(kr_usage_t *u);
const char *kr_usage_error_class_name(int cls);

/* all return 0 on success and -1 when the payload cannot be read */
int kr_usage_openai_response(kr_usage_t *u, const unsigned char *p,
    size_t len);
int kr_usage_openai_chunk(kr_usage_t *u, const unsigned char *data,
    size_t len, int *usage_only);
int kr_usage_anthropic_response(kr_usage_t *u, const unsigned char *p,
    size_t len);
int kr_usage_anthropic_event(kr_usage_t *u, const kr_str_t *event,
    const unsigned char *data, size_t len);

/* sets and returns u->error_class; the body may be empty or not JSON */
int kr_usage_error(kr_usage_t *u, int http_status, const unsigned char *body,
    size_t len);


#endif /* _KR_USAGE_H_INCLUDED_ */
