
/*
 * Copyright (C) kroute authors
 */


/*
 * What kroute needs to know about an OpenAI chat-completion request to
 * route and meter it: model, streaming, tools, output limits, message
 * roles and text sizes, plus a rewrite of the body that swaps the model
 * and asks for streamed usage without re-serialising the JSON.
 */


#ifndef _KR_REQUEST_H_INCLUDED_
#define _KR_REQUEST_H_INCLUDED_


#include "kr_json.h"


#define KR_TOOL_CHOICE_NONE_SET    0   /* no tool_choice key (or null) */
#define KR_TOOL_CHOICE_NONE        1   /* "none" */
#define KR_TOOL_CHOICE_AUTO        2
#define KR_TOOL_CHOICE_REQUIRED    3
#define KR_TOOL_CHOICE_FUNCTION    4   /* {"type":"function",...} */
#define KR_TOOL_CHOICE_OTHER       5

#define KR_RESPONSE_FORMAT_NONE         0
#define KR_RESPONSE_FORMAT_TEXT         1
#define KR_RESPONSE_FORMAT_JSON_OBJECT  2
#define KR_RESPONSE_FORMAT_JSON_SCHEMA  3
#define KR_RESPONSE_FORMAT_OTHER        4

#define KR_ROLE_SYSTEM     0
#define KR_ROLE_DEVELOPER  1
#define KR_ROLE_USER       2
#define KR_ROLE_ASSISTANT  3
#define KR_ROLE_TOOL       4
#define KR_ROLE_OTHER      5
#define KR_ROLE_N          6

/* tokens counted per image part by the estimate */
#define KR_IMAGE_TOKENS    765

/* worst case scratch need of kr_request_rewrite() beyond the model name */
#define KR_REWRITE_SCRATCH(model_len)  (6 * (model_len) + 64)

#define KR_REWRITE_SEGS    6


typedef struct {
    size_t      off;
    size_t      len;
} kr_span_t;


typedef struct {
    kr_str_t    model;              /* raw string body, without quotes */
    kr_span_t   model_span;         /* whole value incl. quotes */

    int         stream;             /* 0/1 */
    int         has_stream_options;
    int         include_usage;      /* stream_options.include_usage true */
    kr_span_t   stream_options;     /* value span */
    kr_span_t   include_usage_span; /* value span, len 0 if absent */

    size_t      close_off;          /* offset of the top-level '}' */
    size_t      n_keys;             /* top-level members */

    int         has_tools;          /* non-empty "tools" array */
    size_t      n_tools;
    size_t      tools_bytes;        /* raw bytes of the tools value */
    int         tool_choice;        /* KR_TOOL_CHOICE_* */
    int         response_format;    /* KR_RESPONSE_FORMAT_* */

    int64_t     max_tokens;         /* -1 unset */
    int64_t     max_completion_tokens;
    int64_t     n;                  /* default 1 */
    kr_str_t    user;               /* raw string body, len 0 if unset */

    size_t      n_messages;
    size_t      roles[KR_ROLE_N];

    /* index -1 and empty span if there is no such message */
    int64_t     system_index;       /* first system or developer message */
    kr_str_t    system_content;     /* raw content value */
    int64_t     last_user_index;
    kr_str_t    last_user_content;

    /* the length kr_request_text() would find, parts and LFs counted */
    size_t      system_text_len;
    size_t      last_user_text_len;

    size_t      text_bytes;         /* decoded text of all contents */
    size_t      n_images;           /* image content parts */
    size_t      code_fences;        /* runs of 3+ backticks, last user */
} kr_request_t;


int kr_request_parse(kr_request_t *req, const unsigned char *body,
    size_t len, const char **err);

/*
 * The decoded text of a message content as kr_request_parse() found it
 * (system_content, last_user_content): parts joined by LF, and when
 * longer than head + tail only the first head and the last tail bytes,
 * joined by LF, without splitting a character.  The content is trusted
 * to be valid JSON; other input is read within its bounds only.
 */
size_t kr_request_text(const kr_str_t *content, unsigned char *dst,
    size_t size, size_t head, size_t tail);

/*
 * The same with the whole decoded length already known (system_text_len,
 * last_user_text_len): one pass over the content instead of two.
 */
size_t kr_request_text_n(const kr_str_t *content, size_t total,
    unsigned char *dst, size_t size, size_t head, size_t tail);

uint64_t kr_request_estimate_input_tokens(const kr_request_t *req);

int kr_request_rewrite(const kr_request_t *req, const unsigned char *body,
    size_t len, const kr_str_t *new_model, int inject_usage,
    kr_str_t seg[KR_REWRITE_SEGS], unsigned char *scratch,
    size_t scratch_size);


#endif /* _KR_REQUEST_H_INCLUDED_ */
