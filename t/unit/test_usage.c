
/*
 * Copyright (C) kroute authors
 */


/*
 * Unit tests of usage extraction: the exact values of every recorded
 * OpenAI and Anthropic reply (whole bodies, and streams replayed whole,
 * at every two-piece split and byte by byte), error classes of the
 * recorded provider errors, and malformed payloads.
 */


#include "tap.h"
#include "kr_sse.h"
#include "kr_usage.h"


#define U  (-1)


typedef struct {
    const char  *file;
    int          anthropic;
    const char  *model;
    int64_t      input;
    int64_t      output;
    int64_t      cached;
    int64_t      cache_write;
    int64_t      reasoning;
    const char  *finish;
    int          usage_only;     /* OpenAI streams: usage-only chunks */
} usage_case_t;


static const usage_case_t  responses[] = {
    { "openai-chat-resp-plain-reasoning-model.json", 0,
      "gpt-5-nano-2025-08-07", 8, 377, 0, U, 320, "stop", 0 },
    { "openai-chat-resp-multiturn.json", 0, "gpt-5-nano-2025-08-07",
      50, 526, 0, U, 512, "stop", 0 },
    { "openai-chat-resp-tool-call.json", 0, "gpt-5-nano-2025-08-07",
      162, 287, 0, U, 256, "tool_calls", 0 },
    { "openai-chat-resp-finish-length-tool-choice.json", 0,
      "gpt-5-nano-2025-08-07", 206, 150, 0, U, 150, "length", 0 },
    { "openai-chat-resp-json-object.json", 0, "gpt-5-nano-2025-08-07",
      21, 280, 0, U, 256, "stop", 0 },
    { "openai-chat-resp-image-url-2245-prompt.json", 0,
      "gpt-5-nano-2025-08-07", 2245, 100, 0, U, 100, "length", 0 },
    { "openai-chat-resp-cache-write-4012.json", 0, "gpt-5.6-sol",
      4020, 4, 0, 4012, 0, "stop", 0 },
    { "openai-chat-resp-cache-read-4012.json", 0, "gpt-5.6-sol",
      4020, 4, 4012, 0, 0, "stop", 0 },
    { "anthropic-messages-resp-cache-read-1111.json", 1,
      "claude-sonnet-4-5-20250929", 1114, 406, 1111, 0, U, "stop", 0 },
    { NULL, 0, NULL, 0, 0, 0, 0, 0, NULL, 0 }
};


static const usage_case_t  streams[] = {
    { "openai-chat-sse-include-usage-reasoning.sse", 0,
      "gpt-5-nano-2025-08-07", 12, 100, 0, U, 100, "length", 1 },
    { "openai-chat-sse-no-usage-chunk.sse", 0, "gpt-5-nano-2025-08-07",
      U, U, U, U, U, "stop", 0 },
    { "openai-chat-sse-tool-calls-two-tools.sse", 0, "gpt-4o-2024-08-06",
      149, 60, U, U, 0, "tool_calls", 1 },
    { "openai-chat-sse-long-47kb.sse", 0, "gpt-4o-2024-08-06",
      19, 177, U, U, 0, "stop", 1 },
    { "openai-chat-sse-max-tokens-1.sse", 0, "gpt-4o-2024-08-06",
      79, 1, U, U, 0, "length", 1 },
    { "anthropic-messages-sse-basic.sse", 1, "claude-3-opus-latest",
      11, 6, U, U, U, "stop", 0 },
    { "anthropic-messages-sse-tool-use.sse", 1, "claude-sonnet-4-20250514",
      377, 65, 0, 0, U, "tool_calls", 0 },
    { "anthropic-messages-sse-thinking.sse", 1, "claude-sonnet-4-20250514",
      43, 282, 0, 0, U, "stop", 0 },
    { NULL, 0, NULL, 0, 0, 0, 0, 0, NULL, 0 }
};


static const struct {
    const char  *file;
    int          status;
    int          cls;
} errors[] = {
    { "openai-error-400-context-length-exceeded.json", 400,
      KR_ERROR_CONTEXT_LENGTH },
    { "openai-error-429-insufficient-quota.json", 429, KR_ERROR_QUOTA },
    { "openai-error-429-rate-limit-tpm.json", 429, KR_ERROR_RATE_LIMIT },
    { "openai-error-500-server-error.json", 500, KR_ERROR_UPSTREAM_5XX },
    { "anthropic-error-429-rate-limit.json", 429, KR_ERROR_RATE_LIMIT },
    { "anthropic-error-529-overloaded.json", 529, KR_ERROR_OVERLOADED },
    { NULL, 0, 0 }
};


typedef struct {
    kr_usage_t   u;
    int          anthropic;
    int          events;
    int          usage_only;
    int          failed;
} replay_t;


static int
on_event(void *ctx, const kr_sse_event_t *ev)
{
    int        uo;
    replay_t  *r = ctx;

    r->events++;

    if (r->anthropic) {
        if (kr_usage_anthropic_event(&r->u, &ev->event, ev->data, ev->len)
            != 0)
        {
            r->failed++;
        }

        return 0;
    }

    uo = 0;

    if (kr_usage_openai_chunk(&r->u, ev->data, ev->len, &uo) != 0) {
        r->failed++;
    }

    r->usage_only += uo;

    return 0;
}


static void
replay(replay_t *r, int anthropic, const unsigned char *p, size_t len,
    const size_t *cuts, int ncuts, unsigned char *buf, size_t size)
{
    int       i;
    size_t    from, to;
    kr_sse_t  s;

    memset(r, 0, sizeof(replay_t));
    kr_usage_init(&r->u);
    r->anthropic = anthropic;

    kr_sse_init(&s, buf, size);

    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;
        kr_sse_feed(&s, p + from, to - from, on_event, r);
        from = to;
    }

    kr_sse_finish(&s, on_event, r);
}


static int
same_usage(const kr_usage_t *a, const kr_usage_t *b)
{
    return a->input == b->input && a->output == b->output
           && a->cached == b->cached && a->cache_write == b->cache_write
           && a->reasoning == b->reasoning
           && a->have_usage == b->have_usage
           && a->error_class == b->error_class
           && strcmp(a->model, b->model) == 0
           && strcmp(a->finish_reason, b->finish_reason) == 0;
}


static void
check(const char *name, const kr_usage_t *u, const usage_case_t *c)
{
    is_str(u->model, c->model, "%s: model", name);
    is_int(u->input, c->input, "%s: input", name);
    is_int(u->output, c->output, "%s: output", name);
    is_int(u->cached, c->cached, "%s: cached", name);
    is_int(u->cache_write, c->cache_write, "%s: cache_write", name);
    is_int(u->reasoning, c->reasoning, "%s: reasoning", name);
    is_int(u->have_usage, c->input != U, "%s: have_usage", name);
    is_str(u->finish_reason, c->finish, "%s: finish reason", name);
    is_int(u->error_class, KR_ERROR_NONE, "%s: no error", name);
}


static void
test_responses(void)
{
    int                  rc;
    size_t               len;
    kr_usage_t           u;
    unsigned char       *p;
    const usage_case_t  *c;

    for (c = responses; c->file; c++) {
        p = tap_fixture(c->file, &len);
        kr_usage_init(&u);

        rc = c->anthropic ? kr_usage_anthropic_response(&u, p, len)
                          : kr_usage_openai_response(&u, p, len);

        is_int(rc, 0, "%s: read", c->file);
        check(c->file, &u, c);

        /* a truncated body is unreadable, and not taken for zero usage */
        kr_usage_init(&u);
        rc = c->anthropic ? kr_usage_anthropic_response(&u, p, len / 2)
                          : kr_usage_openai_response(&u, p, len / 2);
        ok(rc == -1 && !u.have_usage && u.input == -1,
           "%s: truncated body refused", c->file);

        free(p);
    }
}


static void
test_streams(void)
{
    int                  bad;
    size_t               len, k, stride, *cuts;
    replay_t            *whole, *r;
    unsigned char       *p, *buf;
    const usage_case_t  *c;

    buf = malloc(65536);
    whole = malloc(sizeof(replay_t));
    r = malloc(sizeof(replay_t));

    for (c = streams; c->file; c++) {
        p = tap_fixture(c->file, &len);

        replay(whole, c->anthropic, p, len, NULL, 0, buf, 65536);

        is_int(whole->failed, 0, "%s: every event readable", c->file);
        check(c->file, &whole->u, c);

        if (!c->anthropic) {
            is_int(whole->usage_only, c->usage_only,
                   "%s: usage-only chunks", c->file);
        }

        /*
         * Every boundary; the 47 KB stream takes every 7th unless
         * KR_UNIT_FULL is set (test_sse covers all its boundaries).
         */

        stride = (len > 32768 && getenv("KR_UNIT_FULL") == NULL) ? 7 : 1;
        bad = 0;

        for (k = 0; k <= len; k += stride) {
            replay(r, c->anthropic, p, len, &k, 1, buf, 65536);

            if (!same_usage(&r->u, &whole->u) || r->events != whole->events
                || r->failed || r->usage_only != whole->usage_only)
            {
                bad++;
            }
        }

        is_int(bad, 0, "%s: same usage at %d two-piece splits", c->file,
               (int) (len / stride + 1));

        cuts = malloc(sizeof(size_t) * (len + 1));

        for (k = 0; k + 1 < len; k++) {
            cuts[k] = k + 1;
        }

        replay(r, c->anthropic, p, len, cuts, len > 1 ? (int) len - 1 : 0,
               buf, 65536);
        ok(same_usage(&r->u, &whole->u) && r->events == whole->events,
           "%s: same usage byte by byte", c->file);

        free(cuts);
        free(p);
    }

    free(r);
    free(whole);
    free(buf);
}


static void
test_errors(void)
{
    int             i;
    size_t          len;
    kr_usage_t      u;
    unsigned char  *p;

    for (i = 0; errors[i].file; i++) {
        p = tap_fixture(errors[i].file, &len);
        kr_usage_init(&u);

        is_int(kr_usage_error(&u, errors[i].status, p, len), errors[i].cls,
               "%s: %s", errors[i].file,
               kr_usage_error_class_name(errors[i].cls));
        is_int(u.error_class, errors[i].cls, "%s: stored", errors[i].file);
        ok(!u.have_usage && u.input == -1, "%s: no tokens", errors[i].file);

        /* the body decides, whatever the status says */
        is_int(kr_usage_error(&u, 200, p, len), errors[i].cls,
               "%s: class from the body alone", errors[i].file);

        free(p);
    }

#define ERR(status, body, cls)                                              \
    p = tap_dup(body, &len);                                                \
    kr_usage_init(&u);                                                      \
    is_int(kr_usage_error(&u, status, p, len), cls, "%d %s -> %s", status,  \
           body, kr_usage_error_class_name(cls));                           \
    free(p)

    ERR(401, "", KR_ERROR_AUTH);
    ERR(403, "<html>forbidden</html>", KR_ERROR_AUTH);
    ERR(404, "{\"error\":{\"message\":\"The model `x` does not exist\","
        "\"type\":\"invalid_request_error\",\"code\":\"model_not_found\"}}",
        KR_ERROR_NOT_FOUND);
    ERR(401, "{\"error\":{\"code\":\"invalid_api_key\",\"type\":"
        "\"invalid_request_error\"}}", KR_ERROR_AUTH);
    ERR(401, "{\"type\":\"error\",\"error\":{\"type\":"
        "\"authentication_error\",\"message\":\"invalid x-api-key\"}}",
        KR_ERROR_AUTH);
    ERR(400, "{\"type\":\"error\",\"error\":{\"type\":"
        "\"invalid_request_error\",\"message\":\"prompt is too long: "
        "201000 tokens > 200000 maximum\"}}", KR_ERROR_CONTEXT_LENGTH);
    ERR(400, "{\"type\":\"error\",\"error\":{\"type\":"
        "\"invalid_request_error\",\"message\":\"max_tokens: bad\"}}",
        KR_ERROR_INVALID_REQUEST);
    ERR(400, "{\"error\":{\"message\":\"Invalid value\",\"type\":"
        "\"invalid_request_error\",\"param\":\"temperature\",\"code\":null}}",
        KR_ERROR_INVALID_REQUEST);
    ERR(402, "{\"type\":\"error\",\"error\":{\"type\":\"billing_error\"}}",
        KR_ERROR_QUOTA);
    ERR(404, "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\"}}",
        KR_ERROR_NOT_FOUND);
    ERR(500, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}",
        KR_ERROR_UPSTREAM_5XX);
    ERR(503, "upstream connect error", KR_ERROR_UPSTREAM_5XX);
    ERR(502, "", KR_ERROR_UPSTREAM_5XX);
    ERR(529, "", KR_ERROR_OVERLOADED);
    ERR(429, "", KR_ERROR_RATE_LIMIT);
    ERR(418, "{}", KR_ERROR_OTHER);
    ERR(409, "{\"error\":\"conflict\"}", KR_ERROR_OTHER);
    ERR(200, "{\"id\":\"x\"}", KR_ERROR_NONE);
    ERR(200, "", KR_ERROR_NONE);
    ERR(200, "{\"error\":null}", KR_ERROR_NONE);
    ERR(200, "{\"error\":{\"type\":\"server_error\"}}",
        KR_ERROR_UPSTREAM_5XX);

    for (i = 0; i < KR_ERROR_N; i++) {
        ok(strlen(kr_usage_error_class_name(i)) > 0, "class %d named %s", i,
           kr_usage_error_class_name(i));
    }

    is_str(kr_usage_error_class_name(KR_ERROR_QUOTA), "quota", "quota name");
    is_str(kr_usage_error_class_name(KR_ERROR_UPSTREAM_5XX), "upstream_5xx",
           "5xx name");
    is_str(kr_usage_error_class_name(99), "other", "out of range");
    is_str(kr_usage_error_class_name(-1), "other", "negative");
}


static void
test_payloads(void)
{
    int             uo;
    size_t          len;
    kr_str_t        ev;
    kr_usage_t      u;
    unsigned char  *p;
    char            longm[400];

    kr_usage_init(&u);
    uo = 7;
    is_int(kr_usage_openai_chunk(&u, (const unsigned char *) "[DONE]", 6,
                                 &uo), 0, "[DONE] is fine");
    is_int(uo, 0, "[DONE] is not a usage chunk");
    is_int(kr_usage_openai_chunk(&u, (const unsigned char *) "{\"id\":", 6,
                                 &uo), -1, "broken chunk refused");
    is_int(kr_usage_openai_chunk(&u, (const unsigned char *) "", 0, NULL), -1,
           "empty chunk refused");
    ok(!u.have_usage, "still no usage");

    p = tap_dup("{\"choices\":[],\"usage\":{\"prompt_tokens\":"
                "99999999999999999999,\"completion_tokens\":-3}}", &len);
    kr_usage_init(&u);
    is_int(kr_usage_openai_chunk(&u, p, len, &uo), 0, "odd usage read");
    ok(u.input == -1 && u.output == -1 && !u.have_usage && !uo,
       "overflowing and negative counts are unknown");
    free(p);

    p = tap_dup("{\"choices\":[{\"index\":0,\"delta\":{}}],\"usage\":"
                "{\"prompt_tokens\":5,\"completion_tokens\":2}}", &len);
    kr_usage_init(&u);
    kr_usage_openai_chunk(&u, p, len, &uo);
    ok(u.input == 5 && u.output == 2 && uo == 0,
       "usage next to choices is read but is not a usage-only chunk");
    free(p);

    p = tap_dup("{\"choices\":[],\"usage\":null}", &len);
    kr_usage_init(&u);
    kr_usage_openai_chunk(&u, p, len, &uo);
    ok(!u.have_usage && uo == 0, "null usage is no usage");
    free(p);

    p = tap_dup("{\"error\":{\"message\":\"overloaded\",\"type\":"
                "\"server_error\"}}", &len);
    kr_usage_init(&u);
    is_int(kr_usage_openai_chunk(&u, p, len, &uo), 0, "error chunk read");
    is_int(u.error_class, KR_ERROR_UPSTREAM_5XX, "error chunk classified");
    free(p);

    memset(longm, 'm', sizeof(longm));
    memcpy(longm, "{\"model\":\"", 10);
    memcpy(longm + sizeof(longm) - 3, "\"}", 2);
    longm[sizeof(longm) - 1] = '\0';
    p = tap_dup(longm, &len);
    kr_usage_init(&u);
    is_int(kr_usage_openai_response(&u, p, len), 0, "long model read");
    is_uint(strlen(u.model), KR_USAGE_MODEL_LEN - 1, "model truncated");
    free(p);

    /* Anthropic: cumulative fields, errors in the stream, no "type" */

    kr_usage_init(&u);
    ev.data = (const unsigned char *) "message_delta";
    ev.len = 13;
    p = tap_dup("{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
                "\"max_tokens\"},\"usage\":{\"output_tokens\":10}}", &len);
    kr_usage_anthropic_event(&u, &ev, p, len);
    kr_usage_anthropic_event(&u, &ev, p, len);
    is_int(u.output, 10, "repeated delta is not summed");
    is_int(u.input, 0, "input known as 0 once usage is seen");
    is_str(u.finish_reason, "length", "max_tokens reads as length");
    free(p);

    p = tap_dup("{\"delta\":{\"stop_reason\":\"pause_turn\"},\"usage\":"
                "{\"output_tokens\":12,\"input_tokens\":4,"
                "\"cache_creation_input_tokens\":30}}", &len);
    kr_usage_anthropic_event(&u, &ev, p, len);
    ok(u.output == 12 && u.input == 34 && u.cache_write == 30
       && u.cached == -1, "event name used when data has no type");
    is_str(u.finish_reason, "pause_turn", "unknown stop reason kept");
    free(p);

    ev.data = (const unsigned char *) "error";
    ev.len = 5;
    p = tap_dup("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                "\"message\":\"Overloaded\"}}", &len);
    kr_usage_anthropic_event(&u, &ev, p, len);
    is_int(u.error_class, KR_ERROR_OVERLOADED, "error event classified");
    free(p);

    is_int(kr_usage_anthropic_event(&u, &ev, (const unsigned char *) "{", 1),
           -1, "broken event refused");
    is_int(kr_usage_anthropic_event(&u, NULL, (const unsigned char *) "{}",
                                    2), 0, "untyped event ignored");

    p = tap_dup("{\"type\":\"error\",\"error\":"
                "{\"type\":\"rate_limit_error\"}}", &len);
    kr_usage_init(&u);
    is_int(kr_usage_anthropic_response(&u, p, len), 0, "error body read");
    is_int(u.error_class, KR_ERROR_RATE_LIMIT, "error body classified");
    free(p);
}


int
main(int argc, char **argv)
{
    tap_init(argc, argv);

    test_responses();
    test_errors();
    test_payloads();
    test_streams();

    return tap_done();
}
