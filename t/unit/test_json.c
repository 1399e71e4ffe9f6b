
/*
 * Copyright (C) kroute authors
 */


/*
 * Unit tests of the JSON scanner: strict acceptance and rejection with
 * error offsets, agreement with jansson on the recorded provider bodies,
 * truncation, nesting limits, iteration, decoding and lookups.  Inputs
 * live in exact-size heap buffers so that sanitizers see any overread.
 */


#include <jansson.h>

#include "tap.h"
#include "kr_json.h"


static const char  *json_fixtures[] = {
    "anthropic-error-429-rate-limit.json",
    "anthropic-error-529-overloaded.json",
    "anthropic-messages-req-thinking-stream.json",
    "anthropic-messages-resp-cache-read-1111.json",
    "openai-chat-req-empty-messages.json",
    "openai-chat-req-image-base64.json",
    "openai-chat-req-image-url.json",
    "openai-chat-req-invalid-params.json",
    "openai-chat-req-long-content-13kb-prompt-cache.json",
    "openai-chat-req-max-completion-tokens.json",
    "openai-chat-req-multiturn-developer-role.json",
    "openai-chat-req-plain.json",
    "openai-chat-req-response-format-json-object.json",
    "openai-chat-req-response-format-json-schema.json",
    "openai-chat-req-stream-include-usage.json",
    "openai-chat-req-stream-no-stream-options.json",
    "openai-chat-req-tool-choice-forced.json",
    "openai-chat-req-tools-parallel.json",
    "openai-chat-req-tools.json",
    "openai-chat-req-unknown-model.json",
    "openai-chat-resp-cache-read-4012.json",
    "openai-chat-resp-cache-write-4012.json",
    "openai-chat-resp-finish-length-tool-choice.json",
    "openai-chat-resp-image-url-2245-prompt.json",
    "openai-chat-resp-json-object.json",
    "openai-chat-resp-multiturn.json",
    "openai-chat-resp-plain-reasoning-model.json",
    "openai-chat-resp-tool-call.json",
    "openai-error-400-context-length-exceeded.json",
    "openai-error-429-insufficient-quota.json",
    "openai-error-429-rate-limit-tpm.json",
    "openai-error-500-server-error.json",
    NULL
};


static const char  *valid[] = {
    "{}", "[]", " \t\r\n{ } \n", "0", "-0", "1.5e+10", "-12.25E-3", "1e5",
    "true", "false", "null", "\"\"", "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"",
    "\"\\u00e9\\u20AC\"", "\"\\ud83d\\ude00\"", "\"caf\xc3\xa9\"",
    "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}", "[[[[[]]]]]",
    "[1,-1,0.5,true,false,null,\"x\",{},[]]",
    NULL
};


/* each with the offset where the scanner must stop */
static const struct {
    const char  *text;
    size_t       off;
} invalid[] = {
    { "", 0 },
    { "   ", 3 },
    { "{", 1 },
    { "{\"a\"}", 4 },
    { "{\"a\":}", 5 },
    { "{\"a\":1,}", 7 },
    { "{,}", 1 },
    { "[1,]", 3 },
    { "[1 2]", 3 },
    { "{} {}", 3 },
    { "{}x", 2 },
    { "01", 1 },
    { "-", 1 },
    { "1.", 2 },
    { ".5", 0 },
    { "1e", 2 },
    { "+1", 0 },
    { "NaN", 0 },
    { "tru", 0 },
    { "nul", 0 },
    { "\"abc", 4 },
    { "\"a\\x\"", 2 },
    { "\"\\u12G4\"", 1 },
    { "\"\\u12\"", 1 },
    { "\"\\ud83d\"", 1 },
    { "\"\\ud83dx\"", 1 },
    { "\"\\ud83d\\u0041\"", 1 },
    { "\"\\ude00\"", 1 },
    { "\"a\tb\"", 2 },
    { "\"a\nb\"", 2 },
    { "{'a':1}", 1 },
    { "{\"a\" 1}", 5 },
    { "[1,2", 4 },
    { NULL, 0 }
};


static int
validate_heap(const char *s, size_t *err)
{
    int             rc;
    size_t          len;
    unsigned char  *p;

    p = tap_dup(s, &len);
    rc = kr_json_validate(p, len, err);
    free(p);

    return rc;
}


static int
jansson_ok(const unsigned char *p, size_t len)
{
    json_t        *j;
    json_error_t   e;

    j = json_loadb((const char *) p, len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                   &e);
    if (j == NULL) {
        return 0;
    }

    json_decref(j);

    return 1;
}


static char *
nest(int depth, char open, char close)
{
    int    i;
    char  *s;

    s = malloc((size_t) depth * 2 + 1);

    for (i = 0; i < depth; i++) {
        s[i] = open;
        s[depth * 2 - 1 - i] = close;
    }

    s[depth * 2] = '\0';

    return s;
}


/* walks every container below v, returns the number of scalar leaves */
static long
walk(const kr_str_t *v, int depth)
{
    int             rc;
    long            n;
    kr_str_t        key, val;
    kr_json_iter_t  it;

    if (kr_json_iter_init(&it, v) != 0) {
        return 1;
    }

    if (depth > KR_JSON_MAX_DEPTH) {
        return -1000000;
    }

    n = 0;

    if (it.type == '{') {
        while ((rc = kr_json_object_next(&it, &key, &val)) == 1) {
            n += walk(&val, depth + 1);
        }

    } else {
        while ((rc = kr_json_array_next(&it, &val)) == 1) {
            n += walk(&val, depth + 1);
        }
    }

    return rc == 0 ? n : -1000000;
}


static void
test_fixtures(void)
{
    int             i, bad;
    size_t          len, k, trimmed, step;
    kr_str_t        top;
    unsigned char  *p, *q;

    for (i = 0; json_fixtures[i]; i++) {
        p = tap_fixture(json_fixtures[i], &len);

        is_int(kr_json_validate(p, len, NULL), 0, "%s validates",
               json_fixtures[i]);
        ok(jansson_ok(p, len), "%s: jansson agrees", json_fixtures[i]);

        ok(kr_json_value(p, len, &top) == 0 && kr_json_is_object(&top)
           && walk(&top, 0) > 0, "%s: full walk", json_fixtures[i]);

        ok(kr_json_skip(p, p + len) == top.data + top.len,
           "%s: skip ends at the closing brace", json_fixtures[i]);

        /* every truncation must be rejected, never overread */

        trimmed = top.data + top.len - p;
        step = len > 2048 ? 97 : 1;
        bad = 0;

        for (k = 0; k < trimmed; k += step) {
            q = malloc(k ? k : 1);
            memcpy(q, p, k);

            if (kr_json_validate(q, k, NULL) == 0
                || kr_json_skip(q, q + k) != NULL)
            {
                bad++;
            }

            free(q);
        }

        is_int(bad, 0, "%s: all truncations rejected", json_fixtures[i]);

        free(p);
    }
}


static void
test_validate(void)
{
    int     i;
    size_t  err, len;
    char   *s;

    for (i = 0; valid[i]; i++) {
        is_int(validate_heap(valid[i], NULL), 0, "valid: %s", valid[i]);
        ok(jansson_ok((const unsigned char *) valid[i], strlen(valid[i])),
           "jansson agrees on %s", valid[i]);
    }

    for (i = 0; invalid[i].text; i++) {
        err = (size_t) -1;
        is_int(validate_heap(invalid[i].text, &err), -1, "invalid: '%s'",
               invalid[i].text);
        is_uint(err, invalid[i].off, "error offset of '%s'", invalid[i].text);

        len = strlen(invalid[i].text);
        ok(!jansson_ok((const unsigned char *) invalid[i].text, len),
           "jansson agrees '%s' is invalid", invalid[i].text);
    }

    /* NUL bytes inside the buffer: valid only escaped */
    is_int(kr_json_validate((const unsigned char *) "\"a\0b\"", 5, NULL), -1,
           "raw NUL in a string rejected");
    is_int(kr_json_validate((const unsigned char *) "\"\\u0000\"", 8, NULL),
           0, "escaped NUL accepted");
    is_int(kr_json_validate((const unsigned char *) "{}\0", 3, NULL), -1,
           "trailing NUL rejected");

    s = nest(KR_JSON_MAX_DEPTH, '[', ']');
    is_int(validate_heap(s, NULL), 0, "nesting %d accepted",
           KR_JSON_MAX_DEPTH);
    free(s);

    s = nest(KR_JSON_MAX_DEPTH + 1, '[', ']');
    err = 0;
    is_int(validate_heap(s, &err), -1, "nesting %d rejected",
           KR_JSON_MAX_DEPTH + 1);
    is_uint(err, KR_JSON_MAX_DEPTH, "deep nesting error offset");
    free(s);

    s = nest(100000, '[', ']');
    is_int(validate_heap(s, NULL), -1, "nesting 100000 rejected, no crash");
    free(s);

    s = malloc(200001);
    memset(s, '{', 100000);
    s[100000] = '\0';
    is_int(validate_heap(s, NULL), -1, "100000 open braces rejected");
    free(s);

    /* jansson refuses integers it cannot hold; the grammar allows them */
    is_int(validate_heap("123456789012345678901234567890", NULL), 0,
           "huge integer is valid JSON");
    is_int(validate_heap("[1e999999999999999999,-1E-99999999999]", NULL), 0,
           "huge exponents are valid JSON");
}


static void
test_iterate(void)
{
    int             rc, n;
    size_t          len;
    int64_t         iv;
    kr_str_t        c, key, val;
    unsigned char  *p;
    kr_json_iter_t  it;

    p = tap_dup(" { \"a\" : 1 , \"b\\u0063\":[true, null] ,\"\":\"x\" } ",
                &len);
    ok(kr_json_value(p, len, &c) == 0, "value span");
    is_int(c.data - p, 1, "span starts at '{'");
    is_int(kr_json_iter_init(&it, &c), 0, "iter init object");

    is_int(kr_json_object_next(&it, &key, &val), 1, "member 1");
    is_mem(key.data, key.len, "a", "key a");
    is_mem(val.data, val.len, "1", "value 1");

    is_int(kr_json_object_next(&it, &key, &val), 1, "member 2");
    is_mem(key.data, key.len, "b\\u0063", "raw key keeps escapes");
    ok(kr_json_key_eq(&key, "bc"), "escaped key compares decoded");
    ok(!kr_json_key_eq(&key, "b"), "prefix does not match");
    ok(!kr_json_key_eq(&key, "bcd"), "longer does not match");
    is_mem(val.data, val.len, "[true, null]", "array value span");

    is_int(kr_json_object_next(&it, &key, &val), 1, "member 3");
    is_int(key.len, 0, "empty key");
    ok(kr_json_key_eq(&key, ""), "empty key equals \"\"");
    is_mem(val.data, val.len, "\"x\"", "string value keeps quotes");

    is_int(kr_json_object_next(&it, &key, &val), 0, "end of object");
    is_int(kr_json_object_next(&it, &key, &val), 0, "end stays end");
    is_int(kr_json_iter_end(&it) - p, (int64_t) len - 1, "iter end");
    free(p);

    p = tap_dup("[1, \"two\", [3], {\"4\":4}]", &len);
    c.data = p;
    c.len = len;
    is_int(kr_json_iter_init(&it, &c), 0, "iter init array");
    n = 0;

    while ((rc = kr_json_array_next(&it, &val)) == 1) {
        n++;
    }

    is_int(rc, 0, "array iteration ends cleanly");
    is_int(n, 4, "four elements");
    is_int(kr_json_object_next(&it, &key, &val), -1,
           "object_next on an array fails");
    free(p);

    p = tap_dup("[]", &len);
    c.data = p;
    c.len = len;
    kr_json_iter_init(&it, &c);
    is_int(kr_json_array_next(&it, &val), 0, "empty array");
    free(p);

    /* broken containers: errors, never overreads */

    p = tap_dup("{\"a\":1 \"b\":2}", &len);
    c.data = p;
    c.len = len;
    kr_json_iter_init(&it, &c);
    is_int(kr_json_object_next(&it, &key, &val), 1, "first member ok");
    is_int(kr_json_object_next(&it, &key, &val), -1, "missing comma");
    free(p);

    p = tap_dup("{\"a\":[1,2", &len);
    c.data = p;
    c.len = len;
    kr_json_iter_init(&it, &c);
    is_int(kr_json_object_next(&it, &key, &val), -1, "truncated value");
    free(p);

    p = tap_dup("{\"a\":1", &len);
    c.data = p;
    c.len = len;
    kr_json_iter_init(&it, &c);
    is_int(kr_json_object_next(&it, &key, &val), 1, "member before EOF");
    is_int(kr_json_object_next(&it, &key, &val), -1, "EOF instead of '}'");
    free(p);

    p = tap_dup("\"str\"", &len);
    c.data = p;
    c.len = len;
    is_int(kr_json_iter_init(&it, &c), -1, "iter init rejects a string");
    free(p);

    c.data = NULL;
    c.len = 0;
    is_int(kr_json_iter_init(&it, &c), -1, "iter init rejects NULL");

    /* literals and integers */

    c.data = (const unsigned char *) "null";
    c.len = 4;
    ok(kr_json_is_null(&c) && !kr_json_is_true(&c), "null");
    c.data = (const unsigned char *) "true";
    ok(kr_json_is_true(&c) && !kr_json_is_false(&c), "true");
    c.data = (const unsigned char *) "false";
    c.len = 5;
    ok(kr_json_is_false(&c), "false");
    c.len = 4;
    ok(!kr_json_is_false(&c), "fals is not false");

#define INT_OK(s, want)                                                     \
    c.data = (const unsigned char *) s;                                     \
    c.len = strlen(s);                                                      \
    iv = 7;                                                                 \
    ok(kr_json_int(&c, &iv) == 0 && iv == (want), "int %s", s)
#define INT_BAD(s)                                                          \
    c.data = (const unsigned char *) s;                                     \
    c.len = strlen(s);                                                      \
    is_int(kr_json_int(&c, &iv), -1, "not an int64: %s", s)

    INT_OK("0", 0);
    INT_OK("-0", 0);
    INT_OK("42", 42);
    INT_OK("-17", -17);
    INT_OK("9223372036854775807", INT64_MAX);
    INT_OK("-9223372036854775808", INT64_MIN);
    INT_BAD("9223372036854775808");
    INT_BAD("-9223372036854775809");
    INT_BAD("99999999999999999999999");
    INT_BAD("1.0");
    INT_BAD("1e3");
    INT_BAD("01");
    INT_BAD("-");
    INT_BAD("");
    INT_BAD("\"1\"");
    INT_BAD("true");
    INT_BAD(" 1");
}


static void
test_decode(void)
{
    size_t          n;
    kr_str_t        raw;
    unsigned char   buf[64];

#define DECODE(s, size, want)                                               \
    raw.data = (const unsigned char *) s;                                   \
    raw.len = strlen(s);                                                    \
    memset(buf, 'Z', sizeof(buf));                                          \
    n = kr_json_string_decode(&raw, buf, size);                             \
    is_mem(buf, n, want, "decode %s into %d", s, (int) (size));             \
    ok(buf[n] == 'Z' || n == sizeof(buf), "no write past %d bytes", (int) n)

    DECODE("\"plain\"", 64, "plain");
    DECODE("plain", 64, "plain");
    DECODE("\"a\\nb\\t\\\"q\\\"\\\\\\/\"", 64, "a\nb\t\"q\"\\/");
    DECODE("\"\\u00e9\"", 64, "\xc3\xa9");
    DECODE("\"\\u20ac\"", 64, "\xe2\x82\xac");
    DECODE("\"\\uD83D\\uDE00\"", 64, "\xf0\x9f\x98\x80");
    DECODE("\"\\ud83d\"", 64, "\xef\xbf\xbd");
    DECODE("\"\\ude00x\"", 64, "\xef\xbf\xbdx");
    DECODE("\"\\u00\"", 64, "\xef\xbf\xbd" "00");
    DECODE("\"abcdef\"", 3, "abc");
    DECODE("\"ab\\u20ac\"", 4, "ab");
    DECODE("\"ab\xe2\x82\xac\"", 4, "ab");
    DECODE("\"ab\xe2\x82\xac\"", 5, "ab\xe2\x82\xac");
    DECODE("\"x\\\"", 64, "x\xef\xbf\xbd");
    DECODE("\"\"", 64, "");
    DECODE("\"abc\"", 0, "");

    raw.data = (const unsigned char *) "\"a\\u00e9\\n\"";
    raw.len = strlen((const char *) raw.data);
    is_uint(kr_json_string_decoded_len(&raw), 4, "decoded length");
}


static void
test_lookup(void)
{
    size_t          len;
    kr_str_t        obj, out;
    unsigned char  *p;

    p = tap_fixture("openai-chat-resp-cache-read-4012.json", &len);
    obj.data = p;
    obj.len = len;

    is_int(kr_json_lookup(&obj, "usage.prompt_tokens_details.cached_tokens",
                          &out), 1, "deep lookup found");
    is_mem(out.data, out.len, "4012", "cached_tokens 4012");

    is_int(kr_json_lookup(&obj, "usage.prompt_tokens", &out), 1,
           "prompt_tokens found");
    is_mem(out.data, out.len, "4020", "prompt_tokens 4020");

    is_int(kr_json_lookup(&obj, "model", &out), 1, "model found");
    is_mem(out.data, out.len, "\"gpt-5.6-sol\"", "model span with quotes");

    is_int(kr_json_lookup(&obj, "usage.nothing", &out), 0, "missing leaf");
    is_int(kr_json_lookup(&obj, "nothing.at.all", &out), 0, "missing root");
    is_int(kr_json_lookup(&obj, "model.x", &out), 0, "through a string");
    is_int(kr_json_lookup(&obj, "usage..x", &out), -1, "empty segment");
    is_int(kr_json_lookup(&obj, "", &out), -1, "empty path");
    is_int(kr_json_lookup(&obj, "usage.", &out), -1, "trailing dot");
    free(p);

    p = tap_dup("{\"a\":1,\"a\":2}", &len);
    obj.data = p;
    obj.len = len;
    is_int(kr_json_lookup(&obj, "a", &out), 1, "duplicate key found");
    is_mem(out.data, out.len, "2", "last duplicate wins");
    free(p);

    p = tap_dup("[1]", &len);
    obj.data = p;
    obj.len = len;
    is_int(kr_json_lookup(&obj, "a", &out), -1, "lookup in an array");
    free(p);

    p = tap_dup("{\"a\":{\"b\":", &len);
    obj.data = p;
    obj.len = len;
    is_int(kr_json_lookup(&obj, "a.b", &out), -1, "lookup in broken JSON");
    free(p);
}


int
main(int argc, char **argv)
{
    tap_init(argc, argv);

    test_validate();
    test_iterate();
    test_decode();
    test_lookup();
    test_fixtures();

    return tap_done();
}
