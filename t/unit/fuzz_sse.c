
/*
 * Copyright (C) kroute authors
 */


/*
 * libFuzzer target for the SSE parser: the first input byte picks a
 * split point and a buffer size; feeding in two pieces must report the
 * same events and offsets as feeding whole, and every event's usage is
 * read.  Build: clang -fsanitize=fuzzer,address,undefined -Isrc
 * t/unit/fuzz_sse.c src/kr_json.c src/kr_sse.c src/kr_usage.c
 */


#include <stdlib.h>
#include <string.h>

#include "kr_sse.h"
#include "kr_usage.h"


typedef struct {
    uint64_t    sum;
    uint64_t    last_end;
    int         n;
    kr_usage_t  u;
} fz_t;


static int
on_event(void *ctx, const kr_sse_event_t *ev)
{
    int     uo;
    size_t  i;
    fz_t   *f = ctx;

    if (ev->start < f->last_end || ev->end <= ev->start) {
        abort();
    }

    f->last_end = ev->end;
    f->n++;
    f->sum = f->sum * 31 + ev->start * 7 + ev->end + ev->len
             + (uint64_t) ev->overflow;

    for (i = 0; i < ev->len; i++) {
        f->sum = f->sum * 131 + ev->data[i];
    }

    (void) kr_usage_openai_chunk(&f->u, ev->data, ev->len, &uo);
    (void) kr_usage_anthropic_event(&f->u, &ev->event, ev->data, ev->len);

    return 0;
}


static void
run(fz_t *f, const unsigned char *p, size_t len, size_t cut, size_t size)
{
    kr_sse_t        s;
    unsigned char  *buf;

    memset(f, 0, sizeof(fz_t));
    kr_usage_init(&f->u);

    buf = malloc(size ? size : 1);
    kr_sse_init(&s, buf, size);
    kr_sse_feed(&s, p, cut, on_event, f);
    kr_sse_feed(&s, p + cut, len - cut, on_event, f);
    kr_sse_finish(&s, on_event, f);

    if (f->last_end > len) {
        abort();
    }

    free(buf);
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    fz_t            a, b;
    size_t          cut, bsize;
    unsigned char  *p;

    if (size < 1) {
        return 0;
    }

    bsize = (data[0] & 0x0F) * 16;
    p = malloc(size - 1 ? size - 1 : 1);
    memcpy(p, data + 1, size - 1);
    size--;

    cut = size ? (data[0] * 7919u) % (size + 1) : 0;

    run(&a, p, size, 0, bsize);
    run(&b, p, size, cut, bsize);

    if (a.n != b.n || a.sum != b.sum || a.last_end != b.last_end
        || a.u.input != b.u.input || a.u.output != b.u.output)
    {
        abort();
    }

    free(p);

    return 0;
}
