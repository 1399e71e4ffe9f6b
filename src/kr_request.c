
/*
 * Copyright (C) kroute authors
 */


/*
 * Chat-completion request extraction.  One validation pass, then a walk
 * of the top-level members and of the messages, keeping spans into the
 * body; the rewrite describes the outgoing body as a few segments of the
 * original plus small pieces in caller scratch memory.
 */


#include <string.h>

#include "kr_request.h"


typedef void (*kr_request_text_pt)(void *ctx, const kr_str_t *raw);


typedef struct {
    unsigned char  *dst;
    size_t          size;
    size_t          w;
    size_t          off;          /* logical offset in the decoded text */
    size_t          total;
    size_t          head;
    size_t          tail_start;
    unsigned        cut:1;
    unsigned        head_closed:1;
    unsigned        sep_written:1;
    unsigned        full:1;
    unsigned        first:1;
} kr_request_text_out_t;


typedef struct {
    size_t          bytes;
    size_t          parts;
    size_t          ticks;
    size_t          fences;
    unsigned        tick_escape:1;   /* "\u0060" or "\`" seen */
} kr_request_count_t;


typedef struct {
    size_t          off;
    size_t          len;
    const char     *text;
    size_t          text_len;
} kr_request_edit_t;


static int kr_request_walk(const kr_str_t *content, kr_request_text_pt cb,
    void *ctx, size_t *n_images);
static inline size_t kr_request_group(const unsigned char *p, size_t n,
    size_t j);
static size_t kr_request_floor(const unsigned char *p, size_t n, size_t k);
static void kr_request_count_text(void *ctx, const kr_str_t *raw);
static void kr_request_count_fences(void *ctx, const kr_str_t *raw);
static void kr_request_emit_text(void *ctx, const kr_str_t *raw);
static void kr_request_emit(kr_request_text_out_t *o,
    const unsigned char *p, size_t n);
static void kr_request_put_run(kr_request_text_out_t *o,
    const unsigned char *p, size_t n);
static void kr_request_emit_run(kr_request_text_out_t *o,
    const unsigned char *p, size_t n);
static int kr_request_message(kr_request_t *req, const kr_str_t *msg,
    int64_t index, int *tick_escape, const char **err);
static int kr_request_stream_options(kr_request_t *req,
    const unsigned char *body, const kr_str_t *v);
static size_t kr_request_escape(unsigned char *dst, const kr_str_t *s);
static inline int kr_request_is_ws(unsigned char c);


static const char  kr_usage_member[] = "\"stream_options\":"
                                       "{\"include_usage\":true}";
static const char  kr_usage_object[] = "{\"include_usage\":true}";
static const char  kr_usage_key[] = "\"include_usage\":true,";


static int
kr_request_walk(const kr_str_t *content, kr_request_text_pt cb, void *ctx,
    size_t *n_images)
{
    int              rc, is_text, is_image;
    kr_str_t         part, key, val, text;
    kr_json_iter_t   it, pit;

    if (content == NULL || content->len == 0 || kr_json_is_null(content)) {
        return 0;
    }

    if (kr_json_is_string(content)) {
        cb(ctx, content);
        return 0;
    }

    /* content always lies in validated memory, see kr_request_text() */

    if (kr_json_iter_init_valid(&it, content) != 0 || it.type != '[') {
        return -1;
    }

    while ((rc = kr_json_array_next(&it, &part)) == 1) {

        if (kr_json_is_string(&part)) {
            cb(ctx, &part);
            continue;
        }

        if (kr_json_iter_init_valid(&pit, &part) != 0 || pit.type != '{') {
            return -1;
        }

        is_text = 0;
        is_image = 0;
        text.len = 0;
        text.data = NULL;

        while ((rc = kr_json_object_next(&pit, &key, &val)) == 1) {

            if (kr_json_key_eq(&key, "type")) {
                if (kr_json_is_string(&val)) {
                    is_text = (val.len == 6
                               && memcmp(val.data, "\"text\"", 6) == 0);
                    is_image = (val.len == 11
                                && memcmp(val.data, "\"image_url\"", 11)
                                   == 0)
                               || (val.len == 13
                                   && memcmp(val.data, "\"input_image\"", 13)
                                      == 0);
                }

            } else if (kr_json_key_eq(&key, "text")
                       && kr_json_is_string(&val))
            {
                text = val;
            }
        }

        if (rc < 0) {
            return -1;
        }

        if (is_text && text.data != NULL) {
            cb(ctx, &text);

        } else if (is_image && n_images) {
            (*n_images)++;
        }
    }

    return rc;
}


/*
 * kr_json_string_decoded_len(), noting on the way the escapes that stand
 * for a backtick, so that fences need counting only in text that has one
 */

static void
kr_request_count_text(void *ctx, const kr_str_t *raw)
{
    unsigned char         ch[4];
    const unsigned char  *p, *end, *q;
    kr_request_count_t   *c = ctx;

    p = raw->data + 1;
    end = raw->data + raw->len - 1;

    while (p < end) {
        q = memchr(p, '\\', (size_t) (end - p));

        if (q == NULL) {
            c->bytes += (size_t) (end - p);
            break;
        }

        c->bytes += (size_t) (q - p);
        p = q;

        if (end - p >= 2 && p[1] != 'u') {
            c->tick_escape |= (p[1] == '`');
            c->bytes++;
            p += 2;
            continue;
        }

        if (end - p >= 6 && memcmp(p + 1, "u0060", 5) == 0) {
            c->tick_escape = 1;
        }

        c->bytes += kr_json_char_next(&p, end, ch);
    }

    c->parts++;
}


static void
kr_request_count_fences(void *ctx, const kr_str_t *raw)
{
    unsigned char         ch[4];
    const unsigned char  *p, *end, *q, *t;
    kr_request_count_t   *c = ctx;

    p = raw->data + 1;
    end = raw->data + raw->len - 1;

    /* a fence never spans two content parts */
    c->ticks = 0;

    while (p < end) {
        q = memchr(p, '\\', (size_t) (end - p));
        if (q == NULL) {
            q = end;
        }

        /*
         * a backtick is never part of a longer UTF-8 character, so in the
         * plain bytes before the backslash the runs of ticks are found
         * by memchr() alone
         */

        while (p < q) {
            t = memchr(p, '`', (size_t) (q - p));

            if (t == NULL) {
                c->ticks = 0;
                break;
            }

            if (t != p) {
                c->ticks = 0;
            }

            for (p = t; p < q && *p == '`'; p++) {
                if (++c->ticks == 3) {
                    c->fences++;
                }
            }
        }

        p = q;

        if (p == end) {
            break;
        }

        /* an escape: only "\u0060" (or a stray "\`") decodes to a tick */

        if (end - p >= 2 && p[1] != 'u') {
            ch[0] = p[1];
            p += 2;

        } else if (kr_json_char_next(&p, end, ch) != 1) {
            ch[0] = '\0';
        }

        if (ch[0] == '`') {
            if (++c->ticks == 3) {
                c->fences++;
            }

        } else {
            c->ticks = 0;
        }
    }
}


static void
kr_request_emit(kr_request_text_out_t *o, const unsigned char *p, size_t n)
{
    int  put;

    put = 0;

    if (!o->cut) {
        put = 1;

    } else if (!o->head_closed && o->off + n <= o->head) {
        put = 1;

    } else {
        o->head_closed = 1;

        if (o->off >= o->tail_start) {
            if (!o->sep_written && !o->full) {
                if (o->size - o->w >= 1) {
                    o->dst[o->w++] = '\n';

                } else {
                    o->full = 1;
                }

                o->sep_written = 1;
            }

            put = 1;
        }
    }

    if (put && !o->full) {
        if (o->size - o->w >= n) {
            memcpy(o->dst + o->w, p, n);
            o->w += n;

        } else {
            o->full = 1;
        }
    }

    o->off += n;
}


/*
 * Plain bytes (no backslash) are grouped into characters the way
 * kr_json_char_next() groups them: a lead byte with all the continuation
 * bytes it announces, any other byte alone.  Every byte that is not a
 * continuation byte therefore starts a character, which makes a cut
 * point decidable by looking at most three bytes back.
 */

static inline size_t
kr_request_group(const unsigned char *p, size_t n, size_t j)
{
    size_t  g, i;

    g = (p[j] < 0xC0) ? 1 : (p[j] < 0xE0) ? 2 : (p[j] < 0xF0) ? 3 : 4;

    if (n - j < g) {
        return 1;
    }

    for (i = 1; i < g; i++) {
        if ((p[j + i] & 0xC0) != 0x80) {
            return 1;
        }
    }

    return g;
}


/* the last character boundary at or before k in the run p[0 .. n) */

static size_t
kr_request_floor(const unsigned char *p, size_t n, size_t k)
{
    size_t  j;

    if (k >= n || (p[k] & 0xC0) != 0x80) {
        return (k >= n) ? n : k;
    }

    for (j = k; j > 0 && k - j < 3; /* void */ ) {
        j--;

        if ((p[j] & 0xC0) != 0x80) {
            return (j + kr_request_group(p, n, j) > k) ? j : k;
        }
    }

    return k;
}


static void
kr_request_put_run(kr_request_text_out_t *o, const unsigned char *p,
    size_t n)
{
    size_t  k;

    if (o->full) {
        return;
    }

    k = n;

    if (o->size - o->w < n) {
        k = kr_request_floor(p, n, o->size - o->w);
        o->full = 1;
    }

    if (k) {
        memcpy(o->dst + o->w, p, k);
        o->w += k;
    }
}


/*
 * A run of plain bytes, with the same outcome as kr_request_emit() called
 * for each of its characters: the part inside the head and the part from
 * the tail start on are copied whole, and the middle is stepped over.
 */

static void
kr_request_emit_run(kr_request_text_out_t *o, const unsigned char *p,
    size_t n)
{
    size_t  k, t;

    if (!o->cut) {
        kr_request_put_run(o, p, n);
        o->off += n;
        return;
    }

    k = 0;

    if (!o->head_closed) {
        k = (o->head - o->off >= n) ? n
                                    : kr_request_floor(p, n, o->head - o->off);

        kr_request_put_run(o, p, k);

        if (k < n) {
            o->head_closed = 1;
        }
    }

    if (k < n) {
        t = k;

        if (o->tail_start > o->off + k) {
            t = o->tail_start - o->off;

            if (t < n) {
                k = kr_request_floor(p, n, t);

                /* the character that straddles the tail start is dropped */
                t = (k == t) ? t : k + kr_request_group(p, n, k);
            }
        }

        if (t < n) {
            if (!o->sep_written && !o->full) {
                if (o->size - o->w >= 1) {
                    o->dst[o->w++] = '\n';

                } else {
                    o->full = 1;
                }
            }

            o->sep_written = 1;

            kr_request_put_run(o, p + t, n - t);
        }
    }

    o->off += n;
}


static void
kr_request_emit_text(void *ctx, const kr_str_t *raw)
{
    size_t                  n;
    unsigned char           ch[4];
    const unsigned char    *p, *end, *q;
    kr_request_text_out_t  *o = ctx;

    if (!o->first) {
        kr_request_emit(o, (const unsigned char *) "\n", 1);
    }

    o->first = 0;

    p = raw->data + 1;
    end = raw->data + raw->len - 1;

    while (p < end && !o->full) {
        q = memchr(p, '\\', (size_t) (end - p));
        if (q == NULL) {
            q = end;
        }

        if (q != p) {
            kr_request_emit_run(o, p, (size_t) (q - p));
            p = q;
        }

        if (p == end) {
            break;
        }

        if (o->head_closed && o->off < o->tail_start
            && end - p >= 2 && p[1] != 'u')
        {
            /* a one-byte escape in the middle that is cut out */
            o->off++;
            p += 2;
            continue;
        }

        n = kr_json_char_next(&p, end, ch);
        kr_request_emit(o, ch, n);
    }
}


size_t
kr_request_text(const kr_str_t *content, unsigned char *dst, size_t size,
    size_t head, size_t tail)
{
    kr_request_count_t  c;

    memset(&c, 0, sizeof(c));

    if (kr_request_walk(content, kr_request_count_text, &c, NULL) < 0) {
        return 0;
    }

    return kr_request_text_n(content, c.bytes + (c.parts ? c.parts - 1 : 0),
                             dst, size, head, tail);
}


size_t
kr_request_text_n(const kr_str_t *content, size_t total, unsigned char *dst,
    size_t size, size_t head, size_t tail)
{
    kr_request_text_out_t  o;

    memset(&o, 0, sizeof(o));

    o.dst = dst;
    o.size = size;
    o.total = total;
    o.head = head;
    o.first = 1;

    if (o.total > head && o.total - head > tail) {
        o.cut = 1;
        o.tail_start = o.total - tail;
    }

    (void) kr_request_walk(content, kr_request_emit_text, &o, NULL);

    return o.w;
}


static inline int
kr_request_is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}


static int
kr_request_stream_options(kr_request_t *req, const unsigned char *body,
    const kr_str_t *v)
{
    int              rc;
    kr_str_t         key, val;
    kr_json_iter_t   it;

    req->has_stream_options = 1;
    req->stream_options.off = (size_t) (v->data - body);
    req->stream_options.len = v->len;

    if (kr_json_is_null(v)) {
        return 0;
    }

    if (kr_json_iter_init_valid(&it, v) != 0 || it.type != '{') {
        return -1;
    }

    while ((rc = kr_json_object_next(&it, &key, &val)) == 1) {
        if (kr_json_key_eq(&key, "include_usage")) {
            req->include_usage = kr_json_is_true(&val);
            req->include_usage_span.off = (size_t) (val.data - body);
            req->include_usage_span.len = val.len;
        }
    }

    return rc;
}


static int
kr_request_message(kr_request_t *req, const kr_str_t *msg, int64_t index,
    int *tick_escape, const char **err)
{
    int                 rc, role;
    kr_str_t            key, val, content, rv;
    kr_json_iter_t      it;
    kr_request_count_t  c;

    if (kr_json_iter_init_valid(&it, msg) != 0 || it.type != '{') {
        *err = "each message must be an object";
        return -1;
    }

    role = -1;
    content.len = 0;
    content.data = NULL;

    while ((rc = kr_json_object_next(&it, &key, &val)) == 1) {

        if (kr_json_key_eq(&key, "role")) {
            if (!kr_json_is_string(&val)) {
                *err = "message \"role\" must be a string";
                return -1;
            }

            rv.data = val.data + 1;
            rv.len = val.len - 2;

            if (kr_json_key_eq(&rv, "system")) {
                role = KR_ROLE_SYSTEM;

            } else if (kr_json_key_eq(&rv, "developer")) {
                role = KR_ROLE_DEVELOPER;

            } else if (kr_json_key_eq(&rv, "user")) {
                role = KR_ROLE_USER;

            } else if (kr_json_key_eq(&rv, "assistant")) {
                role = KR_ROLE_ASSISTANT;

            } else if (kr_json_key_eq(&rv, "tool")) {
                role = KR_ROLE_TOOL;

            } else {
                role = KR_ROLE_OTHER;
            }

        } else if (kr_json_key_eq(&key, "content")) {
            content = val;

        } else if (kr_json_key_eq(&key, "tool_calls")) {
            /* arguments of earlier tool calls are input tokens too */
            req->text_bytes += val.len;
        }
    }

    if (rc < 0) {
        *err = "each message must be an object";
        return -1;
    }

    if (role < 0) {
        *err = "each message must have a \"role\"";
        return -1;
    }

    memset(&c, 0, sizeof(c));

    if (kr_request_walk(&content, kr_request_count_text, &c,
                        &req->n_images)
        < 0)
    {
        *err = "message \"content\" must be a string, an array or null";
        return -1;
    }

    req->text_bytes += c.bytes;
    req->roles[role]++;
    *tick_escape = c.tick_escape;

    if ((role == KR_ROLE_SYSTEM || role == KR_ROLE_DEVELOPER)
        && req->system_index < 0)
    {
        req->system_index = index;
        req->system_content = content;
        req->system_text_len = c.bytes + (c.parts ? c.parts - 1 : 0);
    }

    if (role == KR_ROLE_USER) {
        req->last_user_index = index;
        req->last_user_content = content;
        req->last_user_text_len = c.bytes + (c.parts ? c.parts - 1 : 0);
    }

    return 0;
}


int
kr_request_parse(kr_request_t *req, const unsigned char *body, size_t len,
    const char **err)
{
    int              rc, seen_model, seen_messages, tick_esc, user_tick_esc;
    int64_t          index, iv;
    kr_str_t         top, key, val, messages, msg, t;
    kr_json_iter_t   it, mit;
    kr_request_count_t  c;

    memset(req, 0, sizeof(kr_request_t));

    req->max_tokens = -1;
    req->max_completion_tokens = -1;
    req->n = 1;
    req->system_index = -1;
    req->last_user_index = -1;

    *err = NULL;

    if (body == NULL || kr_json_validate(body, len, NULL) != 0) {
        *err = "body is not valid JSON";
        return -1;
    }

    /* a valid body is one value between whitespace */

    top.data = body;
    top.len = len;

    while (top.len && kr_request_is_ws(top.data[0])) {
        top.data++;
        top.len--;
    }

    while (top.len && kr_request_is_ws(top.data[top.len - 1])) {
        top.len--;
    }

    if (!kr_json_is_object(&top)) {
        *err = "body must be a JSON object";
        return -1;
    }

    /* from here on nothing needs checking again */

    (void) kr_json_iter_init_valid(&it, &top);

    seen_model = 0;
    seen_messages = 0;
    messages.len = 0;
    messages.data = NULL;

    while ((rc = kr_json_object_next(&it, &key, &val)) == 1) {

        req->n_keys++;

        if (kr_json_key_eq(&key, "model")) {
            if (seen_model++) {
                *err = "duplicate \"model\" key";
                return -1;
            }

            if (!kr_json_is_string(&val)) {
                *err = "\"model\" must be a string";
                return -1;
            }

            req->model.data = val.data + 1;
            req->model.len = val.len - 2;
            req->model_span.off = (size_t) (val.data - body);
            req->model_span.len = val.len;

        } else if (kr_json_key_eq(&key, "messages")) {
            if (seen_messages++) {
                *err = "duplicate \"messages\" key";
                return -1;
            }

            messages = val;

        } else if (kr_json_key_eq(&key, "stream")) {
            if (kr_json_is_true(&val)) {
                req->stream = 1;

            } else if (kr_json_is_false(&val) || kr_json_is_null(&val)) {
                req->stream = 0;

            } else {
                *err = "\"stream\" must be a boolean";
                return -1;
            }

        } else if (kr_json_key_eq(&key, "stream_options")) {
            if (req->has_stream_options) {
                *err = "duplicate \"stream_options\" key";
                return -1;
            }

            if (kr_request_stream_options(req, body, &val) != 0) {
                *err = "\"stream_options\" must be an object";
                return -1;
            }

        } else if (kr_json_key_eq(&key, "tools")) {
            if (kr_json_is_null(&val)) {
                continue;
            }

            if (kr_json_iter_init_valid(&mit, &val) != 0 || mit.type != '[') {
                *err = "\"tools\" must be an array";
                return -1;
            }

            while (kr_json_array_next(&mit, &t) == 1) {
                req->n_tools++;
            }

            req->has_tools = (req->n_tools > 0);
            req->tools_bytes = val.len;

        } else if (kr_json_key_eq(&key, "tool_choice")) {
            if (kr_json_is_null(&val)) {
                req->tool_choice = KR_TOOL_CHOICE_NONE_SET;

            } else if (kr_json_is_string(&val)) {
                t.data = val.data + 1;
                t.len = val.len - 2;

                req->tool_choice =
                    kr_json_key_eq(&t, "none") ? KR_TOOL_CHOICE_NONE
                    : kr_json_key_eq(&t, "auto") ? KR_TOOL_CHOICE_AUTO
                    : kr_json_key_eq(&t, "required")
                      ? KR_TOOL_CHOICE_REQUIRED
                    : KR_TOOL_CHOICE_OTHER;

            } else if (kr_json_is_object(&val)) {
                req->tool_choice = KR_TOOL_CHOICE_OTHER;

                if (kr_json_lookup(&val, "type", &t) == 1
                    && kr_json_is_string(&t))
                {
                    t.data++;
                    t.len -= 2;

                    if (kr_json_key_eq(&t, "function")) {
                        req->tool_choice = KR_TOOL_CHOICE_FUNCTION;
                    }
                }

            } else {
                *err = "\"tool_choice\" must be a string or an object";
                return -1;
            }

        } else if (kr_json_key_eq(&key, "response_format")) {
            if (kr_json_is_null(&val)) {
                req->response_format = KR_RESPONSE_FORMAT_NONE;
                continue;
            }

            if (!kr_json_is_object(&val)) {
                *err = "\"response_format\" must be an object";
                return -1;
            }

            req->response_format = KR_RESPONSE_FORMAT_OTHER;

            if (kr_json_lookup(&val, "type", &t) == 1
                && kr_json_is_string(&t))
            {
                t.data++;
                t.len -= 2;

                if (kr_json_key_eq(&t, "text")) {
                    req->response_format = KR_RESPONSE_FORMAT_TEXT;

                } else if (kr_json_key_eq(&t, "json_object")) {
                    req->response_format = KR_RESPONSE_FORMAT_JSON_OBJECT;

                } else if (kr_json_key_eq(&t, "json_schema")) {
                    req->response_format = KR_RESPONSE_FORMAT_JSON_SCHEMA;
                }
            }

        } else if (kr_json_key_eq(&key, "max_tokens")
                   || kr_json_key_eq(&key, "max_completion_tokens")
                   || kr_json_key_eq(&key, "n"))
        {
            if (kr_json_is_null(&val)) {
                iv = (key.len == 1) ? 1 : -1;

            } else if (kr_json_int(&val, &iv) != 0) {
                *err = key.len == 1 ? "\"n\" must be an integer"
                       : key.len == 10 ? "\"max_tokens\" must be an integer"
                       : "\"max_completion_tokens\" must be an integer";
                return -1;
            }

            if (key.len == 1) {
                req->n = iv;

            } else if (key.len == 10) {
                req->max_tokens = iv;

            } else {
                req->max_completion_tokens = iv;
            }

        } else if (kr_json_key_eq(&key, "user")) {
            if (kr_json_is_null(&val)) {
                req->user.len = 0;
                req->user.data = NULL;
                continue;
            }

            if (!kr_json_is_string(&val)) {
                *err = "\"user\" must be a string";
                return -1;
            }

            req->user.data = val.data + 1;
            req->user.len = val.len - 2;
        }
    }

    if (rc != 0) {
        /* cannot happen after validation */
        *err = "body is not valid JSON";
        return -1;
    }

    req->close_off = (size_t) (kr_json_iter_end(&it) - 1 - body);

    if (!seen_model) {
        *err = "\"model\" is required";
        return -1;
    }

    if (kr_json_iter_init_valid(&mit, &messages) != 0 || mit.type != '[') {
        *err = "\"messages\" must be a non-empty array";
        return -1;
    }

    index = 0;
    user_tick_esc = 0;

    while ((rc = kr_json_array_next(&mit, &msg)) == 1) {
        if (kr_request_message(req, &msg, index, &tick_esc, err) != 0) {
            return -1;
        }

        if (req->last_user_index == index) {
            user_tick_esc = tick_esc;
        }

        index++;
    }

    req->n_messages = (size_t) index;

    if (req->n_messages == 0) {
        *err = "\"messages\" must be a non-empty array";
        return -1;
    }

    /* no fence without a backtick, raw or escaped */

    if (req->last_user_index >= 0 && req->last_user_content.len
        && (user_tick_esc
            || memchr(req->last_user_content.data, '`',
                      req->last_user_content.len)
               != NULL))
    {
        memset(&c, 0, sizeof(c));
        (void) kr_request_walk(&req->last_user_content,
                               kr_request_count_fences, &c, NULL);
        req->code_fences = c.fences;
    }

    return 0;
}


uint64_t
kr_request_estimate_input_tokens(const kr_request_t *req)
{
    uint64_t  t;

    /*
     * About four bytes of English text per token, a few tokens of
     * framing per message and per reply, a flat cost per image (a
     * high-detail 512px tile grid), and tool schemas as text.
     */

    t = ((uint64_t) req->text_bytes + 3) / 4;
    t += ((uint64_t) req->tools_bytes + 3) / 4;
    t += 4 * (uint64_t) req->n_messages + 3;
    t += (uint64_t) KR_IMAGE_TOKENS * req->n_images;

    return t;
}


static size_t
kr_request_escape(unsigned char *dst, const kr_str_t *s)
{
    size_t          i, w;
    unsigned char   c;
    static const char  hex[] = "0123456789abcdef";

    w = 0;
    dst[w++] = '"';

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (c == '"' || c == '\\') {
            dst[w++] = '\\';
            dst[w++] = c;

        } else if (c < 0x20) {
            dst[w++] = '\\';
            dst[w++] = 'u';
            dst[w++] = '0';
            dst[w++] = '0';
            dst[w++] = hex[c >> 4];
            dst[w++] = hex[c & 0xF];

        } else {
            dst[w++] = c;
        }
    }

    dst[w++] = '"';

    return w;
}


int
kr_request_rewrite(const kr_request_t *req, const unsigned char *body,
    size_t len, const kr_str_t *new_model, int inject_usage,
    kr_str_t seg[KR_REWRITE_SEGS], unsigned char *scratch,
    size_t scratch_size)
{
    int                 n, ne, i;
    size_t              pos, w, k;
    kr_request_edit_t   ed[2], tmp;
    const unsigned char *p;

    ne = 0;
    w = 0;

    if (req->close_off >= len || req->model_span.off + req->model_span.len
                                 > len)
    {
        return -1;
    }

    if (new_model != NULL) {
        if (scratch_size < KR_REWRITE_SCRATCH(new_model->len)) {
            return -1;
        }

        k = kr_request_escape(scratch, new_model);

        ed[ne].off = req->model_span.off;
        ed[ne].len = req->model_span.len;
        ed[ne].text = (const char *) scratch;
        ed[ne].text_len = k;
        ne++;

        w = k;
    }

    /* stream_options is only accepted by providers on streamed requests */

    if (inject_usage && req->stream && !req->include_usage) {

        if (!req->has_stream_options) {
            if (scratch_size - w < sizeof(kr_usage_member)) {
                return -1;
            }

            k = 0;

            if (req->n_keys) {
                scratch[w] = ',';
                k = 1;
            }

            memcpy(scratch + w + k, kr_usage_member,
                   sizeof(kr_usage_member) - 1);

            ed[ne].off = req->close_off;
            ed[ne].len = 0;
            ed[ne].text = (const char *) scratch + w;
            ed[ne].text_len = k + sizeof(kr_usage_member) - 1;

        } else if (req->include_usage_span.len) {
            ed[ne].off = req->include_usage_span.off;
            ed[ne].len = req->include_usage_span.len;
            ed[ne].text = "true";
            ed[ne].text_len = 4;

        } else if (body[req->stream_options.off] != '{') {
            ed[ne].off = req->stream_options.off;
            ed[ne].len = req->stream_options.len;
            ed[ne].text = kr_usage_object;
            ed[ne].text_len = sizeof(kr_usage_object) - 1;

        } else {
            p = body + req->stream_options.off + 1;

            while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
                p++;
            }

            ed[ne].off = req->stream_options.off + 1;
            ed[ne].len = 0;
            ed[ne].text = kr_usage_key;

            /* drop the comma when the object is empty */
            ed[ne].text_len = sizeof(kr_usage_key) - 1 - (*p == '}');
        }

        ne++;
    }

    if (ne == 2 && ed[0].off > ed[1].off) {
        tmp = ed[0];
        ed[0] = ed[1];
        ed[1] = tmp;
    }

    n = 0;
    pos = 0;

    for (i = 0; i < ne; i++) {
        if (ed[i].off > pos) {
            seg[n].data = body + pos;
            seg[n].len = ed[i].off - pos;
            n++;
        }

        if (ed[i].text_len) {
            seg[n].data = (const unsigned char *) ed[i].text;
            seg[n].len = ed[i].text_len;
            n++;
        }

        pos = ed[i].off + ed[i].len;
    }

    if (pos < len) {
        seg[n].data = body + pos;
        seg[n].len = len - pos;
        n++;
    }

    return n;
}
