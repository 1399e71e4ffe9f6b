
/*
 * Copyright (C) kroute authors
 */


/*
 * Timing of the request-side work kroute does on every chat request:
 * parsing the body and extracting the bounded classifier text of the last
 * user message and of the system prompt.  Bodies are shaped like the
 * recorded prompt-cache request, with a system message added and the user
 * text replaced by prompt-set content up to a target size.  Not a test:
 * build by hand, e.g. cc -O2 -Isrc -o bench_request
 * t/unit/bench_request.c src/kr_json.c src/kr_request.c, and run from the
 * top of the tree.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kr_request.h"


#define BENCH_FIXTURE  \
    "t/fixtures/providers/openai-chat-req-long-content-13kb-prompt-cache.json"
#define BENCH_PROMPTS  "t/fixtures/prompts/dev.jsonl"

#define BENCH_SYSTEM   "{\"role\":\"system\",\"content\":\"You are a careful " \
                       "assistant.\\nAnswer briefly and cite the entry " \
                       "numbers you used.\"},"


typedef struct {
    unsigned char  *data;
    size_t          len;
    size_t          size;
} bench_buf_t;


static unsigned char *bench_read(const char *path, size_t *len);
static void bench_add(bench_buf_t *b, const void *p, size_t n);
static void bench_body(bench_buf_t *body, const unsigned char *fix,
    size_t fix_len, const unsigned char *prompts, size_t prompts_len,
    size_t target);
static double bench_now(void);
static void bench_run(const char *name, const bench_buf_t *body);


static unsigned char *
bench_read(const char *path, size_t *len)
{
    long            n;
    FILE           *f;
    unsigned char  *p;

    f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    p = malloc((size_t) n + 1);
    if (p == NULL || fread(p, 1, (size_t) n, f) != (size_t) n) {
        perror(path);
        exit(1);
    }

    fclose(f);
    *len = (size_t) n;

    return p;
}


static void
bench_add(bench_buf_t *b, const void *p, size_t n)
{
    if (b->size - b->len < n) {
        b->size = 2 * (b->len + n);
        b->data = realloc(b->data, b->size);

        if (b->data == NULL) {
            perror("realloc");
            exit(1);
        }
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;
}


static void
bench_body(bench_buf_t *body, const unsigned char *fix, size_t fix_len,
    const unsigned char *prompts, size_t prompts_len, size_t target)
{
    size_t                grow;
    const char           *key;
    const unsigned char  *p, *end, *m, *t, *te, *s, *e;

    body->len = 0;

    /* the fixture up to and including the '[' of "messages" */

    m = (const unsigned char *) strstr((const char *) fix, "\"messages\"");
    m = memchr(m, '[', fix_len - (size_t) (m - fix)) + 1;

    t = (const unsigned char *) strstr((const char *) m, "\"text\"");
    t = memchr(t + 6, '"', fix_len - (size_t) (t + 6 - fix));
    te = kr_json_skip(t, fix + fix_len);

    bench_add(body, fix, (size_t) (m - fix));
    bench_add(body, BENCH_SYSTEM, sizeof(BENCH_SYSTEM) - 1);
    bench_add(body, m, (size_t) (t - m) + 1);

    /* the user text: raw (still escaped) prompt contents, one per line */

    grow = fix_len - (size_t) (te - 1 - fix);
    key = "\"content\": \"";
    p = prompts;
    end = prompts + prompts_len;

    while (body->len + grow < target) {
        s = (const unsigned char *) strstr((const char *) p, key);

        if (s == NULL || s >= end) {
            p = prompts;
            continue;
        }

        s += strlen(key) - 1;
        e = kr_json_skip(s, end);

        if (body->len + grow + (size_t) (e - s) > target) {
            /* the last piece: plain text up to the target */
            while (body->len + grow < target) {
                bench_add(body, " lorem", 6);
            }

            break;
        }

        bench_add(body, s + 1, (size_t) (e - s) - 2);
        bench_add(body, "\\n\\n", 4);
        p = e;
    }

    bench_add(body, te - 1, fix_len - (size_t) (te - 1 - fix));
}


static double
bench_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec * 1e9 + ts.tv_nsec;
}


static void
bench_run(const char *name, const bench_buf_t *body)
{
    int             it, n;
    double          t0, t1, t2, t3, tp, tu, ts;
    size_t          ul, sl;
    const char     *err;
    kr_request_t    req;
    unsigned char   user[2048 + 1], sys[1024];

    if (kr_request_parse(&req, body->data, body->len, &err) != 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        exit(1);
    }

    n = (int) (200000000 / (body->len + 1000));
    if (n < 20) {
        n = 20;
    }

    tp = tu = ts = 0;
    ul = sl = 0;

    for (it = 0; it < n; it++) {
        t0 = bench_now();
        (void) kr_request_parse(&req, body->data, body->len, &err);
        t1 = bench_now();
        ul += kr_request_text(&req.last_user_content, user, sizeof(user),
                              1024, 1024);
        t2 = bench_now();
        sl += kr_request_text(&req.system_content, sys, sizeof(sys), 1024,
                              0);
        t3 = bench_now();

        tp += t1 - t0;
        tu += t2 - t1;
        ts += t3 - t2;
    }

    printf("%-8s %7zu bytes  parse %9.2f us  text(user) %8.2f us  "
           "text(system) %6.2f us  total %9.2f us  (text %zu+%zu, "
           "%zu fences, %zu text bytes)\n",
           name, body->len, tp / n / 1e3, tu / n / 1e3, ts / n / 1e3,
           (tp + tu + ts) / n / 1e3, ul / n, sl / n, req.code_fences,
           req.text_bytes);
}


int
main(int argc, char **argv)
{
    int             i;
    size_t          fix_len, prompts_len;
    bench_buf_t     body;
    unsigned char  *fix, *prompts;
    static const struct {
        const char  *name;
        size_t       size;
    } sizes[] = { { "2KB", 2048 }, { "13KB", 13 * 1024 },
                  { "200KB", 200 * 1024 } };

    (void) argc;
    (void) argv;

    fix = bench_read(BENCH_FIXTURE, &fix_len);
    prompts = bench_read(BENCH_PROMPTS, &prompts_len);
    fix[fix_len] = '\0';
    prompts[prompts_len] = '\0';

    memset(&body, 0, sizeof(body));

    for (i = 0; i < 3; i++) {
        bench_body(&body, fix, fix_len, prompts, prompts_len,
                   sizes[i].size);
        bench_run(sizes[i].name, &body);
    }

    free(body.data);
    free(fix);
    free(prompts);

    return 0;
}
