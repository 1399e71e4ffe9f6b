
/*
 * Copyright (C) kroute authors
 */


/*
 * Unit tests of chat-completion request extraction on every recorded
 * request body, of the refusal messages, of bounded text extraction and
 * of the body rewrite, whose output jansson must read back with the new
 * model and exactly one stream_options asking for usage.
 */


#include <jansson.h>

#include "tap.h"
#include "kr_request.h"


typedef struct {
    const char  *file;
    const char  *model;
    size_t       model_off;
    size_t       model_len;
    int          stream;
    int          has_so;
    int          include_usage;
    size_t       close_off;
    size_t       n_tools;
    size_t       tools_bytes;
    int          tool_choice;
    int          response_format;
    int64_t      max_tokens;
    int64_t      max_completion_tokens;
    size_t       n_messages;
    size_t       roles[KR_ROLE_N];   /* sys dev user asst tool other */
    int64_t      system_index;
    int64_t      last_user_index;
    size_t       text_bytes;
    size_t       n_images;
    uint64_t     estimate;
} req_case_t;


static const req_case_t  cases[] = {
    { "openai-chat-req-plain.json", "gpt-5-nano", 94, 12, 0, 0, 0, 107,
      0, 0, 0, 0, -1, -1, 1, { 0, 0, 1, 0, 0, 0 }, -1, 0, 6, 0,
      2 + 4 + 3 },
    { "openai-chat-req-multiturn-developer-role.json", "gpt-5-nano", 380,
      12, 0, 0, 0, 413, 0, 0, 0, 0, -1, -1, 4, { 0, 1, 2, 1, 0, 0 }, 0, 3,
      117, 0, 30 + 16 + 3 },
    { "openai-chat-req-image-url.json", "gpt-5-nano", 485, 12, 0, 0, 0, 498,
      0, 0, 0, 0, -1, 100, 1, { 0, 0, 1, 0, 0, 0 }, -1, 0, 22, 1,
      6 + 4 + 3 + 765 },
    { "openai-chat-req-image-base64.json", "gpt-5-nano", 541, 12, 0, 0, 0,
      554, 0, 0, 0, 0, -1, -1, 1, { 0, 0, 1, 0, 0, 0 }, -1, 0, 46, 1,
      12 + 4 + 3 + 765 },
    { "openai-chat-req-invalid-params.json", "gpt-5-nano", 109, 12, 0, 0, 0,
      145, 0, 0, 0, 0, 0, -1, 1, { 0, 0, 1, 0, 0, 0 }, -1, 0, 0, 0,
      0 + 4 + 3 },
    { "openai-chat-req-long-content-13kb-prompt-cache.json", "gpt-5.6-sol",
      13022, 13, 0, 0, 0, 13188, 0, 0, 0, 0, -1, -1, 1,
      { 0, 0, 1, 0, 0, 0 }, -1, 0, 12549, 0, 3138 + 4 + 3 },
    { "openai-chat-req-max-completion-tokens.json", "gpt-5-nano", 148, 12,
      0, 0, 0, 181, 0, 0, 0, 0, -1, 100, 1, { 0, 1, 0, 0, 0, 0 }, 0, -1, 23,
      0, 6 + 4 + 3 },
    { "openai-chat-req-response-format-json-object.json", "gpt-5-nano", 154,
      12, 0, 0, 0, 221, 0, 0, 0, KR_RESPONSE_FORMAT_JSON_OBJECT, -1, -1, 1,
      { 0, 0, 1, 0, 0, 0 }, -1, 0, 66, 0, 17 + 4 + 3 },
    { "openai-chat-req-response-format-json-schema.json", "gpt-5-nano", 465,
      12, 0, 0, 0, 1560, 0, 0, 0, KR_RESPONSE_FORMAT_JSON_SCHEMA, -1, -1, 2,
      { 1, 0, 1, 0, 0, 0 }, 0, 1, 320, 0, 80 + 8 + 3 },
    { "openai-chat-req-stream-include-usage.json", "gpt-5-nano", 148, 12, 1,
      1, 1, 252, 0, 0, 0, 0, -1, 100, 1, { 0, 1, 0, 0, 0, 0 }, 0, -1, 23, 0,
      6 + 4 + 3 },
    { "openai-chat-req-stream-no-stream-options.json", "gpt-5-nano", 94, 12,
      1, 0, 0, 125, 0, 0, 0, 0, -1, -1, 1, { 0, 0, 1, 0, 0, 0 }, -1, 0, 6,
      0, 2 + 4 + 3 },
    { "openai-chat-req-tool-choice-forced.json", "gpt-5-nano", 446, 12, 0, 0,
      0, 1128, 1, 553, KR_TOOL_CHOICE_FUNCTION, 0, -1, 150, 2,
      { 1, 0, 1, 0, 0, 0 }, 0, 1, 269, 0, 68 + 139 + 8 + 3 },
    { "openai-chat-req-tools-parallel.json", "gpt-5-nano", 130, 12, 0, 0, 0,
      863, 1, 651, KR_TOOL_CHOICE_AUTO, 0, -1, -1, 1, { 0, 0, 1, 0, 0, 0 },
      -1, 0, 42, 0, 11 + 163 + 4 + 3 },
    { "openai-chat-req-tools.json", "gpt-5-nano", 129, 12, 0, 0, 0, 831, 1,
      651, KR_TOOL_CHOICE_AUTO, 0, -1, -1, 1, { 0, 0, 1, 0, 0, 0 }, -1, 0,
      41, 0, 11 + 163 + 4 + 3 },
    { "openai-chat-req-unknown-model.json", "gpt-4.1-nano-wrong", 94, 20, 0,
      0, 0, 115, 0, 0, 0, 0, -1, -1, 1, { 0, 0, 1, 0, 0, 0 }, -1, 0, 6, 0,
      2 + 4 + 3 },
    { "anthropic-messages-req-thinking-stream.json", "claude-sonnet-4-0",
      210, 19, 1, 0, 0, 318, 0, 0, 0, 0, 4096, -1, 1, { 0, 0, 1, 0, 0, 0 },
      -1, 0, 26, 0, 7 + 4 + 3 },
    { NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, { 0 }, 0, 0, 0, 0,
      0 }
};


static const struct {
    const char  *body;
    const char  *err;
} bad[] = {
    { "", "body is not valid JSON" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]",
      "body is not valid JSON" },
    { "{\"model\":\"m\"} x", "body is not valid JSON" },
    { "[1]", "body must be a JSON object" },
    { "\"str\"", "body must be a JSON object" },
    { "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
      "\"model\" is required" },
    { "{\"model\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
      "\"model\" must be a string" },
    { "{\"model\":null,\"messages\":[{\"role\":\"user\"}]}",
      "\"model\" must be a string" },
    { "{\"model\":\"a\",\"model\":\"b\",\"messages\":[{\"role\":\"user\"}]}",
      "duplicate \"model\" key" },
    { "{\"model\":\"m\"}", "\"messages\" must be a non-empty array" },
    { "{\"model\":\"m\",\"messages\":[]}",
      "\"messages\" must be a non-empty array" },
    { "{\"model\":\"m\",\"messages\":{}}",
      "\"messages\" must be a non-empty array" },
    { "{\"model\":\"m\",\"messages\":[\"hi\"]}",
      "each message must be an object" },
    { "{\"model\":\"m\",\"messages\":[{\"content\":\"hi\"}]}",
      "each message must have a \"role\"" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":1}]}",
      "message \"role\" must be a string" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":1}]}",
      "message \"content\" must be a string, an array or null" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[1]}]}",
      "message \"content\" must be a string, an array or null" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"stream\":1}",
      "\"stream\" must be a boolean" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],"
      "\"stream_options\":true}", "\"stream_options\" must be an object" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],"
      "\"stream_options\":{},\"stream_options\":{}}",
      "duplicate \"stream_options\" key" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"tools\":{}}",
      "\"tools\" must be an array" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"tool_choice\":1}",
      "\"tool_choice\" must be a string or an object" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],"
      "\"response_format\":\"json\"}",
      "\"response_format\" must be an object" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],"
      "\"max_tokens\":1.5}", "\"max_tokens\" must be an integer" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],"
      "\"max_completion_tokens\":99999999999999999999}",
      "\"max_completion_tokens\" must be an integer" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"n\":\"2\"}",
      "\"n\" must be an integer" },
    { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"user\":7}",
      "\"user\" must be a string" },
    { NULL, NULL }
};


static size_t
join(const kr_str_t *seg, int n, unsigned char **out)
{
    int     i;
    size_t  len;

    len = 0;

    for (i = 0; i < n; i++) {
        len += seg[i].len;
    }

    *out = malloc(len ? len : 1);
    len = 0;

    for (i = 0; i < n; i++) {
        memcpy(*out + len, seg[i].data, seg[i].len);
        len += seg[i].len;
    }

    return len;
}


/*
 * Rewrites body and checks with jansson: valid JSON without duplicate
 * keys, the new model, include_usage true when streamed, every other
 * member untouched.
 */
static void
check_rewrite(const char *name, const unsigned char *body, size_t len,
    const char *model, int expect_usage)
{
    int             n;
    size_t          olen;
    json_t         *a, *b, *so;
    kr_str_t        seg[KR_REWRITE_SEGS], nm;
    const char     *err;
    json_error_t    je;
    kr_request_t    req;
    unsigned char  *out, scratch[256];

    if (!ok(kr_request_parse(&req, body, len, &err) == 0, "%s: parsed",
            name))
    {
        printf("# %s\n", err);
        return;
    }

    nm.data = (const unsigned char *) model;
    nm.len = strlen(model);

    n = kr_request_rewrite(&req, body, len, &nm, 1, seg, scratch,
                           sizeof(scratch));
    if (!ok(n > 0 && n <= KR_REWRITE_SEGS, "%s: %d segments", name, n)) {
        return;
    }

    olen = join(seg, n, &out);

    is_int(kr_json_validate(out, olen, NULL), 0, "%s: rewrite validates",
           name);

    a = json_loadb((const char *) out, olen, JSON_REJECT_DUPLICATES, &je);
    b = json_loadb((const char *) body, len, 0, &je);

    ok(a != NULL, "%s: jansson reads it, no duplicate keys", name);

    if (a != NULL && b != NULL) {
        is_str(json_string_value(json_object_get(a, "model")), model,
               "%s: new model", name);

        so = json_object_get(a, "stream_options");

        if (expect_usage) {
            ok(json_is_true(json_object_get(so, "include_usage")),
               "%s: include_usage true", name);

        } else {
            ok(json_equal(so, json_object_get(b, "stream_options"))
               || (so == NULL && json_object_get(b, "stream_options")
                   == NULL), "%s: stream_options untouched", name);
        }

        json_object_del(a, "model");
        json_object_del(b, "model");

        if (so != NULL) {
            json_object_del(so, "include_usage");
            so = json_object_get(b, "stream_options");

            if (json_is_object(so)) {
                json_object_del(so, "include_usage");
            }

            if (json_object_size(json_object_get(a, "stream_options")) == 0
                && !json_is_object(so))
            {
                json_object_del(a, "stream_options");
                json_object_del(b, "stream_options");
            }
        }

        ok(json_equal(a, b), "%s: other members unchanged", name);
    }

    json_decref(a);
    json_decref(b);
    free(out);
}


static void
test_fixtures(void)
{
    int             i, k;
    size_t          len;
    const char     *err;
    kr_request_t    req;
    unsigned char  *p;
    const req_case_t  *c;

    for (c = cases; c->file; c++) {
        p = tap_fixture(c->file, &len);

        err = "?";
        if (!ok(kr_request_parse(&req, p, len, &err) == 0, "%s parses",
                c->file))
        {
            printf("# %s\n", err);
            free(p);
            continue;
        }

        ok(err == NULL, "%s: no error text", c->file);
        is_mem(req.model.data, req.model.len, c->model, "%s: model",
               c->file);
        is_uint(req.model_span.off, c->model_off, "%s: model offset",
                c->file);
        is_uint(req.model_span.len, c->model_len, "%s: model span length",
                c->file);
        ok(p[req.model_span.off] == '"'
           && p[req.model_span.off + req.model_span.len - 1] == '"',
           "%s: model span has its quotes", c->file);
        is_int(req.stream, c->stream, "%s: stream", c->file);
        is_int(req.has_stream_options, c->has_so, "%s: stream_options",
               c->file);
        is_int(req.include_usage, c->include_usage, "%s: include_usage",
               c->file);
        is_uint(req.close_off, c->close_off, "%s: closing brace offset",
                c->file);
        ok(p[req.close_off] == '}', "%s: '}' at close offset", c->file);
        is_uint(req.n_tools, c->n_tools, "%s: tools", c->file);
        is_int(req.has_tools, c->n_tools > 0, "%s: has_tools", c->file);
        is_uint(req.tools_bytes, c->tools_bytes, "%s: tools bytes",
                c->file);
        is_int(req.tool_choice, c->tool_choice, "%s: tool_choice", c->file);
        is_int(req.response_format, c->response_format,
               "%s: response_format", c->file);
        is_int(req.max_tokens, c->max_tokens, "%s: max_tokens", c->file);
        is_int(req.max_completion_tokens, c->max_completion_tokens,
               "%s: max_completion_tokens", c->file);
        is_int(req.n, 1, "%s: n defaults to 1", c->file);
        is_uint(req.user.len, 0, "%s: no user", c->file);
        is_uint(req.n_messages, c->n_messages, "%s: messages", c->file);

        for (k = 0; k < KR_ROLE_N; k++) {
            is_uint(req.roles[k], c->roles[k], "%s: role count %d",
                    c->file, k);
        }

        is_int(req.system_index, c->system_index, "%s: system index",
               c->file);
        is_int(req.last_user_index, c->last_user_index,
               "%s: last user index", c->file);
        is_uint(req.text_bytes, c->text_bytes, "%s: text bytes", c->file);
        is_uint(req.n_images, c->n_images, "%s: images", c->file);
        is_uint(req.code_fences, 0, "%s: no code fences", c->file);
        is_uint(kr_request_estimate_input_tokens(&req), c->estimate,
                "%s: input token estimate", c->file);

        check_rewrite(c->file, p, len, "gpt-4o-mini", c->stream);

        free(p);
    }

    p = tap_fixture("openai-chat-req-empty-messages.json", &len);
    is_int(kr_request_parse(&req, p, len, &err), -1, "empty messages");
    is_str(err, "\"messages\" must be a non-empty array",
           "empty messages error");
    free(p);

    (void) i;
}


static void
test_errors(void)
{
    int             i;
    size_t          len;
    const char     *err;
    kr_request_t    req;
    unsigned char  *p;

    for (i = 0; bad[i].body; i++) {
        p = tap_dup(bad[i].body, &len);
        err = NULL;
        is_int(kr_request_parse(&req, p, len, &err), -1, "refused: %s",
               bad[i].body);
        is_str(err, bad[i].err, "message for %s", bad[i].body);
        free(p);
    }
}


static void
test_fields(void)
{
    size_t          len;
    const char     *err;
    kr_request_t    req;
    unsigned char  *p;

    p = tap_dup("{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                "\"text\":\"```py\\nx\\n```\"},{\"type\":\"image_url\","
                "\"image_url\":{\"url\":\"u\"}},{\"type\":\"text\","
                "\"text\":\"````\"}]},"
                "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":"
                "[{\"id\":\"c\"}]},{\"role\":\"tool\",\"content\":\"r\"},"
                "{\"role\":\"function\",\"content\":\"f\"},"
                "{\"role\":\"developer\",\"content\":\"d\"},"
                "{\"role\":\"user\",\"content\":\"a ``` b ``` c ```\"}],"
                "\"model\":\"m\\\"x\",\"n\":3,\"user\":\"u-1\","
                "\"tool_choice\":\"required\",\"tools\":[],"
                "\"response_format\":{\"type\":\"text\"},\"stream\":false,"
                "\"max_tokens\":null}", &len);

    is_int(kr_request_parse(&req, p, len, &err), 0, "mixed body parses");
    is_mem(req.model.data, req.model.len, "m\\\"x", "raw escaped model");
    is_int(req.n, 3, "n");
    is_mem(req.user.data, req.user.len, "u-1", "user");
    is_int(req.tool_choice, KR_TOOL_CHOICE_REQUIRED, "tool_choice required");
    is_int(req.has_tools, 0, "empty tools array is no tools");
    is_int(req.response_format, KR_RESPONSE_FORMAT_TEXT, "text format");
    is_int(req.max_tokens, -1, "null max_tokens is unset");
    is_uint(req.n_messages, 7, "seven messages");
    is_uint(req.roles[KR_ROLE_SYSTEM], 1, "system");
    is_uint(req.roles[KR_ROLE_USER], 2, "user");
    is_uint(req.roles[KR_ROLE_ASSISTANT], 1, "assistant");
    is_uint(req.roles[KR_ROLE_TOOL], 1, "tool");
    is_uint(req.roles[KR_ROLE_OTHER], 1, "function counts as other");
    is_uint(req.roles[KR_ROLE_DEVELOPER], 1, "developer");
    is_int(req.system_index, 0, "first system message");
    is_mem(req.system_content.data, req.system_content.len, "\"s\"",
           "system content span");
    is_int(req.last_user_index, 6, "last user message");
    is_mem(req.last_user_content.data, req.last_user_content.len,
           "\"a ``` b ``` c ```\"", "last user content span");
    is_uint(req.code_fences, 3, "three fences in the last user message");
    is_uint(req.n_images, 1, "one image part");
    /* s + 11 + 4 + tool_calls raw (12) + r + f + d + 17 */
    is_uint(req.text_bytes, 1 + 11 + 4 + 12 + 1 + 1 + 1 + 17, "text bytes");
    free(p);

    p = tap_dup("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                "\"content\":[{\"type\":\"text\",\"text\":\"```a```\"},"
                "{\"type\":\"text\",\"text\":\"``\"},{\"type\":\"text\","
                "\"text\":\"`\\u0060`\"}]}],\"tool_choice\":{\"type\":"
                "\"allowed_tools\"},\"response_format\":{\"type\":\"x\"}}",
                &len);
    is_int(kr_request_parse(&req, p, len, &err), 0, "parts body parses");
    is_uint(req.code_fences, 3, "fences do not span parts, escapes count");
    is_int(req.tool_choice, KR_TOOL_CHOICE_OTHER, "other tool_choice");
    is_int(req.response_format, KR_RESPONSE_FORMAT_OTHER, "other format");
    free(p);

    p = tap_dup("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                "\"content\":\"```\"},{\"role\":\"user\",\"content\":"
                "\"\\u0060\\u0060\\u0060 x \\u0060\\u0060\\u0060\"}]}",
                &len);
    is_int(kr_request_parse(&req, p, len, &err), 0, "escaped ticks parse");
    is_uint(req.code_fences, 2, "fences made of escaped ticks only");
    free(p);

    p = tap_dup("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                "\"content\":\"\\u0060\\u0060\\u0060\"},{\"role\":"
                "\"user\",\"content\":\"no fence\"},{\"role\":"
                "\"assistant\",\"content\":\"```\"}]}", &len);
    is_int(kr_request_parse(&req, p, len, &err), 0, "earlier ticks parse");
    is_uint(req.code_fences, 0, "only the last user message counts");
    free(p);
}


static void
test_text(void)
{
    size_t          len, n, flen, tlen;
    json_t         *j, *parts;
    kr_str_t        content;
    const char     *err, *full, *last;
    json_error_t    je;
    kr_request_t    req;
    unsigned char  *p, buf[512];

#define TEXT(json, size, head, tail, want)                                  \
    p = tap_dup(json, &len);                                                \
    content.data = p;                                                       \
    content.len = len;                                                      \
    memset(buf, 'Z', sizeof(buf));                                          \
    n = kr_request_text(&content, buf, size, head, tail);                   \
    is_mem(buf, n, want, "text of %s (%d,%d,%d)", json, (int) (size),       \
           (int) (head), (int) (tail));                                     \
    ok(buf[n] == 'Z', "nothing written past %d", (int) n);                  \
    free(p)

    TEXT("\"hello\"", 100, 100, 100, "hello");
    TEXT("\"hello world\"", 100, 3, 3, "hel\nrld");
    TEXT("\"hello world\"", 100, 6, 5, "hello world");
    TEXT("\"hello world\"", 100, 0, 5, "\nworld");
    TEXT("\"hello world\"", 5, 100, 100, "hello");
    TEXT("\"a\\nb\"", 100, 100, 100, "a\nb");
    TEXT("\"\\u00e9t\\u00e9 x\"", 100, 3, 2, "\xc3\xa9t\n x");
    TEXT("\"\\u00e9t\\u00e9 x\"", 100, 1, 1, "\nx");
    TEXT("[{\"type\":\"text\",\"text\":\"one\"},{\"type\":\"image_url\"},"
         "{\"type\":\"text\",\"text\":\"two\"}]", 100, 100, 100,
         "one\ntwo");
    TEXT("[{\"type\":\"text\",\"text\":\"one\"},"
         "{\"type\":\"text\",\"text\":\"two\"}]", 100, 2, 2, "on\nwo");

    /* cuts next to multi-byte characters and escapes */
    TEXT("\"ab\xc3\xa9" "cd\"", 100, 3, 0, "ab");
    TEXT("\"ab\xc3\xa9" "cd\"", 100, 1, 4, "a\n\xc3\xa9" "cd");
    TEXT("\"ab\xc3\xa9" "cd\"", 100, 1, 3, "a\ncd");
    TEXT("\"ab\\u00e9cd\"", 100, 3, 2, "ab\ncd");
    TEXT("\"ab\\u00e9cd\"", 100, 4, 4, "ab\xc3\xa9" "cd");
    TEXT("\"\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\"", 100, 4, 4,
         "\xe2\x82\xac\n\xe2\x82\xac");
    TEXT("\"\xe2\x82\xac\xe2\x82\xac\"", 5, 100, 100, "\xe2\x82\xac");
    TEXT("\"x\\ud83d\\ude00y\"", 100, 2, 2, "x\ny");
    TEXT("\"x\\ud83d\\ude00y\"", 100, 0, 5, "\n\xf0\x9f\x98\x80y");
    TEXT("\"\xc3\xa9\xc3\"", 100, 1, 1, "\n\xc3");
    TEXT("\"a\\nb\\nc\\nd\\ne\"", 100, 2, 2, "a\n\n\ne");
    TEXT("\"abcdef\"", 4, 2, 2, "ab\ne");
    TEXT("\"abcdef\"", 2, 2, 2, "ab");
    TEXT("null", 100, 100, 100, "");
    TEXT("[]", 100, 100, 100, "");
    TEXT("42", 100, 100, 100, "");

    /* the 13 KB prompt: head and tail must match jansson's decoding */

    p = tap_fixture("openai-chat-req-long-content-13kb-prompt-cache.json",
                    &len);
    ok(kr_request_parse(&req, p, len, &err) == 0, "13 KB prompt parses");

    /* two text parts, joined by LF */
    j = json_loadb((const char *) p, len, 0, &je);
    parts = json_object_get(json_array_get(json_object_get(j, "messages"), 0),
                            "content");
    full = json_string_value(json_object_get(json_array_get(parts, 0),
                                             "text"));
    last = json_string_value(json_object_get(json_array_get(parts, 1),
                                             "text"));
    flen = strlen(full);
    is_uint(flen, 12527, "first part length");
    is_uint(strlen(last), 22, "second part length");
    is_uint(req.text_bytes, 12527 + 22, "text bytes count both parts");

    n = kr_request_text(&req.last_user_content, buf, sizeof(buf), 200, 100);
    is_uint(n, 301, "head 200 + LF + tail 100");
    ok(memcmp(buf, full, 200) == 0, "head matches");
    ok(buf[200] == '\n', "joined by LF");
    ok(memcmp(buf + 201, full + flen - 77, 77) == 0
       && buf[278] == '\n' && memcmp(buf + 279, last, 22) == 0,
       "tail is the end of part one, LF, part two");

    tlen = kr_request_text(&req.last_user_content, buf, 64, 200, 100);
    is_uint(tlen, 64, "bounded by the buffer");
    ok(memcmp(buf, full, 64) == 0, "bounded output is the head");

    json_decref(j);
    free(p);
}


static void
test_rewrite(void)
{
    int             n;
    size_t          len;
    kr_str_t        seg[KR_REWRITE_SEGS], nm;
    const char     *err;
    kr_request_t    req;
    unsigned char  *p, *out, scratch[64];

    static const char  *bodies[] = {
        "{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"stream\":true,"
        "\"stream_options\":{}}",
        "{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"stream\":true,"
        "\"stream_options\":{ \n }}",
        "{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"stream\":true,"
        "\"stream_options\":{\"include_usage\":false}}",
        "{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"stream\":true,"
        "\"stream_options\":{\"include_obfuscation\":false}}",
        "{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"stream\":true,"
        "\"stream_options\":{\"include_usage\":null,\"x\":1}}",
        "{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],\"stream\":true,"
        "\"stream_options\":null}",
        "{\"stream_options\":{\"include_usage\":false},\"stream\":true,"
        "\"messages\":[{\"role\":\"user\"}],\"model\":\"a\"}",
        " {\"stream\":true,\"model\":\"a\",\"messages\":[{\"role\":\"user\"}]"
        " } \n",
        "{\"stream\":true,\"model\":\"a\",\"messages\":[{\"role\":\"user\"}],"
        "\"stream_options\":{\"include_usage\":true}}",
        NULL
    };

    for (n = 0; bodies[n]; n++) {
        p = tap_dup(bodies[n], &len);
        check_rewrite(bodies[n], p, len, "new-model", 1);
        free(p);
    }

    p = tap_dup("{\"model\":\"a\",\"messages\":[{\"role\":\"user\"}]}", &len);
    check_rewrite("quote and control in the name", p, len, "x\"y\\z\x01", 0);
    check_rewrite("unchanged non-streamed", p, len, "a", 0);

    kr_request_parse(&req, p, len, &err);

    nm.data = (const unsigned char *) "b";
    nm.len = 1;

    n = kr_request_rewrite(&req, p, len, &nm, 1, seg, scratch, 6);
    is_int(n, -1, "scratch too small");

    n = kr_request_rewrite(&req, p, len, NULL, 1, seg, NULL, 0);
    is_int(n, 1, "no model, no stream: the body as is");
    ok(n == 1 && seg[0].data == p && seg[0].len == len, "one whole segment");
    free(p);

    p = tap_dup("{\"model\":\"a\",\"stream\":true,\"messages\":"
                "[{\"role\":\"user\"}]}", &len);
    kr_request_parse(&req, p, len, &err);
    n = kr_request_rewrite(&req, p, len, NULL, 1, seg, scratch,
                           sizeof(scratch));
    is_int(n, 3, "injection only: prefix, member, suffix");
    len = join(seg, n, &out);
    is_mem(out, len, "{\"model\":\"a\",\"stream\":true,\"messages\":"
           "[{\"role\":\"user\"}],\"stream_options\":"
           "{\"include_usage\":true}}", "exact injected body");
    free(out);
    free(p);
}


int
main(int argc, char **argv)
{
    tap_init(argc, argv);

    test_fixtures();
    test_errors();
    test_fields();
    test_text();
    test_rewrite();

    return tap_done();
}
