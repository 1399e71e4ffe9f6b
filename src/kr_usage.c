
/*
 * Copyright (C) kroute authors
 */


/*
 * Usage extraction from provider replies.  Unknown counts stay -1 so
 * that "no usage reported" is never confused with zero tokens; Anthropic
 * stream events carry cumulative counts, so each field keeps its latest
 * value and the totals are recomputed, never summed across events.
 */


#include <string.h>

#include "kr_usage.h"


static void kr_usage_copy(char *dst, size_t size, const kr_str_t *v);
static int64_t kr_usage_field(const kr_str_t *obj, const char *path);
static int kr_usage_openai_usage(kr_usage_t *u, const kr_str_t *usage);
static int kr_usage_openai_body(kr_usage_t *u, const kr_str_t *top,
    int *usage_only);
static void kr_usage_anthropic_usage(kr_usage_t *u, const kr_str_t *usage);
static void kr_usage_anthropic_finish(kr_usage_t *u, const kr_str_t *v);
static int kr_usage_classify(int status, const kr_str_t *err);
static int kr_usage_str_is(const kr_str_t *v, const char *s);


static const char  *kr_usage_error_names[] = {
    "none",
    "rate_limit",
    "quota",
    "context_length",
    "invalid_request",
    "auth",
    "not_found",
    "upstream_5xx",
    "overloaded",
    "other"
};


void
kr_usage_init(kr_usage_t *u)
{
    memset(u, 0, sizeof(kr_usage_t));

    u->input = -1;
    u->output = -1;
    u->cached = -1;
    u->cache_write = -1;
    u->reasoning = -1;
    u->a_input = -1;
    u->a_cache_read = -1;
    u->a_cache_creation = -1;
}


const char *
kr_usage_error_class_name(int cls)
{
    if (cls < 0 || cls >= KR_ERROR_N) {
        return "other";
    }

    return kr_usage_error_names[cls];
}


static void
kr_usage_copy(char *dst, size_t size, const kr_str_t *v)
{
    size_t  n;

    if (!kr_json_is_string(v)) {
        return;
    }

    n = kr_json_string_decode(v, (unsigned char *) dst, size - 1);
    dst[n] = '\0';
}


static int
kr_usage_str_is(const kr_str_t *v, const char *s)
{
    kr_str_t  in;

    if (!kr_json_is_string(v)) {
        return 0;
    }

    in.data = v->data + 1;
    in.len = v->len - 2;

    return kr_json_key_eq(&in, s);
}


static int64_t
kr_usage_field(const kr_str_t *obj, const char *path)
{
    int64_t   n;
    kr_str_t  v;

    if (kr_json_lookup(obj, path, &v) != 1 || kr_json_int(&v, &n) != 0
        || n < 0)
    {
        return -1;
    }

    return n;
}


static int
kr_usage_openai_usage(kr_usage_t *u, const kr_str_t *usage)
{
    if (!kr_json_is_object(usage)) {
        return 0;
    }

    u->input = kr_usage_field(usage, "prompt_tokens");
    u->output = kr_usage_field(usage, "completion_tokens");
    u->cached = kr_usage_field(usage, "prompt_tokens_details.cached_tokens");
    u->cache_write = kr_usage_field(usage,
                                 "prompt_tokens_details.cache_write_tokens");
    u->reasoning = kr_usage_field(usage,
                              "completion_tokens_details.reasoning_tokens");

    u->have_usage = (u->input >= 0 || u->output >= 0);

    return u->have_usage;
}


static int
kr_usage_openai_body(kr_usage_t *u, const kr_str_t *top, int *usage_only)
{
    int                   rc, n_choices;
    kr_str_t              key, val, choice, fr;
    kr_json_iter_t        it, cit;
    const unsigned char  *p;

    if (kr_json_iter_init(&it, top) != 0 || it.type != '{') {
        return -1;
    }

    n_choices = -1;
    rc = 0;

    while ((rc = kr_json_object_next(&it, &key, &val)) == 1) {

        if (kr_json_key_eq(&key, "model")) {
            if (kr_json_is_string(&val) && val.len > 2) {
                kr_usage_copy(u->model, sizeof(u->model), &val);
            }

        } else if (kr_json_key_eq(&key, "choices")) {
            if (kr_json_iter_init(&cit, &val) != 0 || cit.type != '[') {
                continue;
            }

            n_choices = 0;

            while (kr_json_array_next(&cit, &choice) == 1) {
                n_choices++;

                if (kr_json_lookup(&choice, "finish_reason", &fr) == 1
                    && kr_json_is_string(&fr))
                {
                    kr_usage_copy(u->finish_reason,
                                  sizeof(u->finish_reason), &fr);
                }
            }

        } else if (kr_json_key_eq(&key, "usage")) {
            if (kr_usage_openai_usage(u, &val) && usage_only) {
                *usage_only = 1;
            }

        } else if (kr_json_key_eq(&key, "error")) {
            if (!kr_json_is_null(&val)) {
                u->error_class = kr_usage_classify(0, &val);
            }
        }
    }

    if (usage_only && *usage_only && n_choices > 0) {
        *usage_only = 0;
    }

    if (rc != 0) {
        return -1;
    }

    /* every member was validated while iterating; only space may follow */

    for (p = kr_json_iter_end(&it); p < top->data + top->len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            return -1;
        }
    }

    return 0;
}


int
kr_usage_openai_response(kr_usage_t *u, const unsigned char *p, size_t len)
{
    kr_str_t  top;

    top.data = p;
    top.len = len;

    return kr_usage_openai_body(u, &top, NULL);
}


int
kr_usage_openai_chunk(kr_usage_t *u, const unsigned char *data, size_t len,
    int *usage_only)
{
    int       dummy;
    kr_str_t  top;

    if (usage_only == NULL) {
        usage_only = &dummy;
    }

    *usage_only = 0;

    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        return 0;
    }

    top.data = data;
    top.len = len;

    return kr_usage_openai_body(u, &top, usage_only);
}


static void
kr_usage_anthropic_usage(kr_usage_t *u, const kr_str_t *usage)
{
    int64_t  n;

    if (!kr_json_is_object(usage)) {
        return;
    }

    /* counts are cumulative: the latest value of each field wins */

    n = kr_usage_field(usage, "input_tokens");
    if (n >= 0) {
        u->a_input = n;
    }

    n = kr_usage_field(usage, "cache_read_input_tokens");
    if (n >= 0) {
        u->a_cache_read = n;
    }

    n = kr_usage_field(usage, "cache_creation_input_tokens");
    if (n >= 0) {
        u->a_cache_creation = n;
    }

    n = kr_usage_field(usage, "output_tokens");
    if (n >= 0) {
        u->output = n;
    }

    if (u->a_input < 0 && u->a_cache_read < 0 && u->a_cache_creation < 0
        && u->output < 0)
    {
        return;
    }

    u->input = (u->a_input > 0 ? u->a_input : 0)
               + (u->a_cache_read > 0 ? u->a_cache_read : 0)
               + (u->a_cache_creation > 0 ? u->a_cache_creation : 0);
    u->cached = u->a_cache_read;
    u->cache_write = u->a_cache_creation;
    u->have_usage = 1;
}


static void
kr_usage_anthropic_finish(kr_usage_t *u, const kr_str_t *v)
{
    const char  *name;

    if (!kr_json_is_string(v)) {
        return;
    }

    /* reported in OpenAI terms, so that counters compare across providers */

    if (kr_usage_str_is(v, "end_turn") || kr_usage_str_is(v, "stop_sequence"))
    {
        name = "stop";

    } else if (kr_usage_str_is(v, "max_tokens")) {
        name = "length";

    } else if (kr_usage_str_is(v, "tool_use")) {
        name = "tool_calls";

    } else if (kr_usage_str_is(v, "refusal")) {
        name = "content_filter";

    } else {
        kr_usage_copy(u->finish_reason, sizeof(u->finish_reason), v);
        return;
    }

    strcpy(u->finish_reason, name);
}


int
kr_usage_anthropic_response(kr_usage_t *u, const unsigned char *p,
    size_t len)
{
    kr_str_t  top, v;

    if (kr_json_validate(p, len, NULL) != 0
        || kr_json_value(p, len, &top) != 0 || !kr_json_is_object(&top))
    {
        return -1;
    }

    if (kr_json_lookup(&top, "type", &v) == 1
        && kr_usage_str_is(&v, "error"))
    {
        if (kr_json_lookup(&top, "error", &v) == 1) {
            u->error_class = kr_usage_classify(0, &v);
        }

        return 0;
    }

    if (kr_json_lookup(&top, "model", &v) == 1 && v.len > 2) {
        kr_usage_copy(u->model, sizeof(u->model), &v);
    }

    if (kr_json_lookup(&top, "stop_reason", &v) == 1) {
        kr_usage_anthropic_finish(u, &v);
    }

    if (kr_json_lookup(&top, "usage", &v) == 1) {
        kr_usage_anthropic_usage(u, &v);
    }

    return 0;
}


int
kr_usage_anthropic_event(kr_usage_t *u, const kr_str_t *event,
    const unsigned char *data, size_t len)
{
    kr_str_t  top, type, v;

    if (kr_json_validate(data, len, NULL) != 0
        || kr_json_value(data, len, &top) != 0 || !kr_json_is_object(&top))
    {
        return -1;
    }

    /* the "type" member names the event; the SSE event line repeats it */

    if (kr_json_lookup(&top, "type", &type) != 1
        || !kr_json_is_string(&type))
    {
        if (event == NULL || event->len == 0) {
            return 0;
        }

        if (kr_json_key_eq(event, "message_start")) {
            type.data = (const unsigned char *) "\"message_start\"";
            type.len = 15;

        } else if (kr_json_key_eq(event, "message_delta")) {
            type.data = (const unsigned char *) "\"message_delta\"";
            type.len = 15;

        } else if (kr_json_key_eq(event, "error")) {
            type.data = (const unsigned char *) "\"error\"";
            type.len = 7;

        } else {
            return 0;
        }
    }

    if (kr_usage_str_is(&type, "message_start")) {
        if (kr_json_lookup(&top, "message.model", &v) == 1 && v.len > 2) {
            kr_usage_copy(u->model, sizeof(u->model), &v);
        }

        if (kr_json_lookup(&top, "message.usage", &v) == 1) {
            kr_usage_anthropic_usage(u, &v);
        }

    } else if (kr_usage_str_is(&type, "message_delta")) {
        if (kr_json_lookup(&top, "delta.stop_reason", &v) == 1) {
            kr_usage_anthropic_finish(u, &v);
        }

        if (kr_json_lookup(&top, "usage", &v) == 1) {
            kr_usage_anthropic_usage(u, &v);
        }

    } else if (kr_usage_str_is(&type, "error")) {
        if (kr_json_lookup(&top, "error", &v) == 1) {
            u->error_class = kr_usage_classify(0, &v);

        } else {
            u->error_class = KR_ERROR_OTHER;
        }
    }

    return 0;
}


static int
kr_usage_classify(int status, const kr_str_t *err)
{
    int             i;
    size_t          n;
    kr_str_t        f[2], msg;
    unsigned char   text[512];

    f[0].len = 0;
    f[0].data = NULL;
    f[1] = f[0];
    n = 0;

    if (err != NULL && kr_json_is_object(err)) {
        (void) kr_json_lookup(err, "code", &f[0]);
        (void) kr_json_lookup(err, "type", &f[1]);

        if (kr_json_lookup(err, "message", &msg) == 1
            && kr_json_is_string(&msg))
        {
            n = kr_json_string_decode(&msg, text, sizeof(text) - 1);
        }

    } else if (err != NULL && kr_json_is_string(err)) {
        f[0] = *err;
    }

    text[n] = '\0';

    /* an exhausted quota is not retryable, unlike a rate limit */

    for (i = 0; i < 2; i++) {
        if (kr_usage_str_is(&f[i], "insufficient_quota")
            || kr_usage_str_is(&f[i], "billing_error")
            || kr_usage_str_is(&f[i], "billing_hard_limit_reached"))
        {
            return KR_ERROR_QUOTA;
        }
    }

    for (i = 0; i < 2; i++) {
        if (kr_usage_str_is(&f[i], "context_length_exceeded")
            || kr_usage_str_is(&f[i], "string_above_max_length"))
        {
            return KR_ERROR_CONTEXT_LENGTH;
        }
    }

    if (strstr((char *) text, "maximum context length")
        || strstr((char *) text, "prompt is too long")
        || strstr((char *) text, "context window"))
    {
        return KR_ERROR_CONTEXT_LENGTH;
    }

    for (i = 0; i < 2; i++) {
        if (kr_usage_str_is(&f[i], "rate_limit_exceeded")
            || kr_usage_str_is(&f[i], "rate_limit_error"))
        {
            return KR_ERROR_RATE_LIMIT;
        }

        if (kr_usage_str_is(&f[i], "overloaded_error")) {
            return KR_ERROR_OVERLOADED;
        }

        if (kr_usage_str_is(&f[i], "authentication_error")
            || kr_usage_str_is(&f[i], "permission_error")
            || kr_usage_str_is(&f[i], "invalid_api_key"))
        {
            return KR_ERROR_AUTH;
        }

        if (kr_usage_str_is(&f[i], "not_found_error")
            || kr_usage_str_is(&f[i], "model_not_found"))
        {
            return KR_ERROR_NOT_FOUND;
        }

        if (kr_usage_str_is(&f[i], "server_error")
            || kr_usage_str_is(&f[i], "api_error"))
        {
            return KR_ERROR_UPSTREAM_5XX;
        }
    }

    switch (status) {
    case 429:
        return KR_ERROR_RATE_LIMIT;
    case 529:
        return KR_ERROR_OVERLOADED;
    case 401:
    case 403:
        return KR_ERROR_AUTH;
    case 404:
        return KR_ERROR_NOT_FOUND;
    case 400:
    case 413:
    case 422:
        return KR_ERROR_INVALID_REQUEST;
    }

    if (status >= 500) {
        return KR_ERROR_UPSTREAM_5XX;
    }

    for (i = 0; i < 2; i++) {
        if (kr_usage_str_is(&f[i], "invalid_request_error")) {
            return KR_ERROR_INVALID_REQUEST;
        }
    }

    if (status >= 400 || err != NULL) {
        return KR_ERROR_OTHER;
    }

    return KR_ERROR_NONE;
}


int
kr_usage_error(kr_usage_t *u, int http_status, const unsigned char *body,
    size_t len)
{
    kr_str_t   top, err;
    kr_str_t  *e;

    e = NULL;

    if (body != NULL && len > 0 && kr_json_validate(body, len, NULL) == 0
        && kr_json_value(body, len, &top) == 0
        && kr_json_lookup(&top, "error", &err) == 1
        && !kr_json_is_null(&err))
    {
        e = &err;
    }

    if (e == NULL && http_status < 400) {
        u->error_class = KR_ERROR_NONE;
        return u->error_class;
    }

    u->error_class = kr_usage_classify(http_status, e);

    return u->error_class;
}
