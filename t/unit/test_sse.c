
/*
 * Copyright (C) kroute authors
 */


/*
 * Unit tests of the SSE parser: every recorded stream parsed whole, at
 * every two-piece split and byte by byte must give the same events with
 * the same absolute offsets; line-end variants, comments, multi-line
 * data, buffer overflow and end-of-stream handling.
 */


#include "tap.h"
#include "kr_sse.h"


#define MAX_EVENTS  512


typedef struct {
    uint64_t  start;
    uint64_t  end;
    uint64_t  hash;        /* over name, data and flags */
    size_t    len;
    int       overflow;
} ev_t;


typedef struct {
    ev_t      ev[MAX_EVENTS];
    int       n;
    int       stop_after;  /* callback fails at this event, 0 never */
    char      last_name[KR_SSE_EVENT_LEN + 1];
    char      last_data[256];
} rec_t;


static const struct {
    const char  *file;
    int          events;
    int          trailing_blank;   /* ends with a blank line */
} sse_fixtures[] = {
    { "anthropic-messages-sse-basic.sse", 9, 0 },
    { "anthropic-messages-sse-thinking.sse", 118, 1 },
    { "anthropic-messages-sse-tool-use.sse", 15, 0 },
    { "openai-chat-sse-include-usage-reasoning.sse", 4, 1 },
    { "openai-chat-sse-long-47kb.sse", 181, 1 },
    { "openai-chat-sse-max-tokens-1.sse", 5, 1 },
    { "openai-chat-sse-no-usage-chunk.sse", 51, 1 },
    { "openai-chat-sse-tool-calls-two-tools.sse", 26, 1 },
    { NULL, 0, 0 }
};


/* a word-at-a-time hash: the split tests hash every event many times */
static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
    size_t               i;
    uint64_t             w;
    const unsigned char *c = p;

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&w, c + i, 8);
        h = (h ^ w) * 1099511628211ULL;
        h ^= h >> 29;
    }

    for ( /* void */ ; i < n; i++) {
        h = (h ^ c[i]) * 1099511628211ULL;
    }

    return h ^ n;
}


static int
record(void *ctx, const kr_sse_event_t *e)
{
    rec_t     *r = ctx;
    uint64_t   h;
    size_t     n;

    if (r->n >= MAX_EVENTS) {
        return -1;
    }

    h = fnv(14695981039346656037ULL, e->event.data, e->event.len);
    h = fnv(h, "|", 1);
    h = fnv(h, e->data, e->len);
    h = fnv(h, &e->overflow, sizeof(int));

    r->ev[r->n].start = e->start;
    r->ev[r->n].end = e->end;
    r->ev[r->n].hash = h;
    r->ev[r->n].len = e->len;
    r->ev[r->n].overflow = e->overflow;
    r->n++;

    memcpy(r->last_name, e->event.data, e->event.len);
    r->last_name[e->event.len] = '\0';
    n = e->len < sizeof(r->last_data) - 1 ? e->len : sizeof(r->last_data) - 1;
    memcpy(r->last_data, e->data, n);
    r->last_data[n] = '\0';

    if (r->stop_after && r->n == r->stop_after) {
        return 1;
    }

    return 0;
}


/* feeds p in pieces cut at the given points, then finishes */
static void
run(rec_t *r, const unsigned char *p, size_t len, const size_t *cuts,
    int ncuts, unsigned char *buf, size_t size)
{
    int             i;
    size_t          from, to;
    kr_sse_t        s;
    unsigned char  *piece;

    memset(r, 0, sizeof(rec_t));
    kr_sse_init(&s, buf, size);

    from = 0;

    for (i = 0; i <= ncuts; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        /* each piece in its own exact-size allocation */
        piece = malloc(to - from ? to - from : 1);
        memcpy(piece, p + from, to - from);
        kr_sse_feed(&s, piece, to - from, record, r);
        free(piece);

        from = to;
    }

    kr_sse_finish(&s, record, r);
}


static int
same(const rec_t *a, const rec_t *b)
{
    return a->n == b->n && memcmp(a->ev, b->ev, sizeof(ev_t) * a->n) == 0;
}


static unsigned char *
convert(const unsigned char *p, size_t len, const char *eol, size_t *olen)
{
    size_t          i, n, el;
    unsigned char  *o;

    el = strlen(eol);
    o = malloc(len * el + 1);
    n = 0;

    for (i = 0; i < len; i++) {
        if (p[i] == '\n') {
            memcpy(o + n, eol, el);
            n += el;

        } else {
            o[n++] = p[i];
        }
    }

    *olen = n;

    return o;
}


static void
splits_stride(const char *name, const unsigned char *p, size_t len,
    rec_t *whole, unsigned char *buf, size_t size, size_t stride)
{
    int      bad;
    size_t   k, *cuts;
    rec_t   *r;

    r = malloc(sizeof(rec_t));
    bad = 0;

    for (k = 0; k <= len; k += stride) {
        run(r, p, len, &k, 1, buf, size);

        if (!same(r, whole)) {
            bad++;
        }
    }

    is_int(bad, 0, "%s: same events at %d two-piece splits", name,
           (int) (len / stride + 1));

    cuts = malloc(sizeof(size_t) * (len + 1));

    for (k = 0; k < len; k++) {
        cuts[k] = k + 1;
    }

    run(r, p, len, cuts, len ? (int) len - 1 : 0, buf, size);
    ok(same(r, whole), "%s: same events byte by byte", name);

    free(cuts);
    free(r);
}


static void
splits(const char *name, const unsigned char *p, size_t len, rec_t *whole,
    unsigned char *buf, size_t size)
{
    splits_stride(name, p, len, whole, buf, size, 1);
}


static void
test_fixtures(void)
{
    int             i, j, bad;
    size_t          len, clen;
    rec_t          *whole, *alt, *one;
    unsigned char  *p, *c, *buf;
    static const char  *eols[] = { "\r\n", "\r" };

    buf = malloc(65536);
    whole = malloc(sizeof(rec_t));
    alt = malloc(sizeof(rec_t));
    one = malloc(sizeof(rec_t));

    for (i = 0; sse_fixtures[i].file; i++) {
        p = tap_fixture(sse_fixtures[i].file, &len);

        run(whole, p, len, NULL, 0, buf, 65536);

        is_int(whole->n, sse_fixtures[i].events, "%s: %d events",
               sse_fixtures[i].file, sse_fixtures[i].events);
        is_uint(whole->ev[0].start, 0, "%s: first event at 0",
                sse_fixtures[i].file);
        is_uint(whole->ev[whole->n - 1].end, len,
                "%s: last event ends the stream", sse_fixtures[i].file);

        bad = 0;

        for (j = 0; j < whole->n; j++) {
            if (whole->ev[j].overflow
                || (j > 0 && whole->ev[j].start != whole->ev[j - 1].end))
            {
                bad++;
            }

            /* the byte range alone holds exactly that event */
            run(one, p + whole->ev[j].start,
                whole->ev[j].end - whole->ev[j].start, NULL, 0, buf, 65536);

            if (one->n != 1 || one->ev[0].hash != whole->ev[j].hash) {
                bad++;
            }
        }

        is_int(bad, 0, "%s: events are contiguous and self-contained",
               sse_fixtures[i].file);

        if (sse_fixtures[i].trailing_blank) {
            ok(p[len - 1] == '\n' && p[len - 2] == '\n',
               "%s: ends with a blank line", sse_fixtures[i].file);
        }

        splits(sse_fixtures[i].file, p, len, whole, buf, 65536);

        for (j = 0; j < 2; j++) {
            c = convert(p, len, eols[j], &clen);
            run(alt, c, clen, NULL, 0, buf, 65536);

            bad = (alt->n != whole->n);

            for (int k = 0; !bad && k < alt->n; k++) {
                if (alt->ev[k].hash != whole->ev[k].hash) {
                    bad = 1;
                }
            }

            ok(!bad && alt->ev[alt->n - 1].end == clen,
               "%s with %s: same events", sse_fixtures[i].file,
               j ? "CR" : "CRLF");

            if (len < 10000) {
                splits(j ? "CR variant" : "CRLF variant", c, clen, alt, buf,
                       65536);
            }

            free(c);
        }

        free(p);
    }

    /* a small buffer: long events are flagged and truncated, not fatal */

    p = tap_fixture("openai-chat-sse-long-47kb.sse", &len);
    run(whole, p, len, NULL, 0, buf, 65536);
    run(alt, p, len, NULL, 0, buf, 100);

    is_int(alt->n, 181, "100-byte buffer: still 181 events");

    bad = 0;

    for (j = 0; j < alt->n; j++) {
        if (alt->ev[j].start != whole->ev[j].start
            || alt->ev[j].end != whole->ev[j].end
            || alt->ev[j].overflow != (whole->ev[j].len > 100)
            || alt->ev[j].len != (whole->ev[j].len > 100
                                  ? 100 : whole->ev[j].len))
        {
            bad++;
        }
    }

    is_int(bad, 0, "100-byte buffer: offsets kept, overflow flagged");
    is_str(alt->last_data, "[DONE]", "short event after overflows intact");

    splits_stride("47kb with a 100-byte buffer", p, len, alt, buf, 100, 7);
    free(p);

    free(one);
    free(alt);
    free(whole);
    free(buf);
}


static void
test_syntax(void)
{
    int             rc;
    size_t          len;
    rec_t          *r;
    kr_sse_t        s;
    unsigned char  *p, buf[64];

    r = malloc(sizeof(rec_t));

#define SSE(text, nev, name, data)                                          \
    p = tap_dup(text, &len);                                                \
    run(r, p, len, NULL, 0, buf, sizeof(buf));                              \
    is_int(r->n, nev, "events in %s", text);                                \
    if (nev) {                                                              \
        is_str(r->last_name, name, "event name in %s", text);               \
        is_str(r->last_data, data, "data in %s", text);                     \
    }                                                                       \
    free(p)

    SSE("data: x\n\n", 1, "", "x");
    SSE("data:x\n\n", 1, "", "x");
    SSE("data:  x\n\n", 1, "", " x");
    SSE("data: a\ndata: b\n\n", 1, "", "a\nb");
    SSE("data\n\n", 1, "", "");
    SSE("data:\n\n", 1, "", "");
    SSE("data\ndata\n\n", 1, "", "\n");
    SSE(": comment\ndata: x\n: more\n\n", 1, "", "x");
    SSE(":\n\n", 0, "", "");
    SSE("event: ping\n\n", 0, "", "");
    SSE("event: a\nevent: b\ndata: 1\n\n", 1, "b", "1");
    SSE("id: 7\nretry: 10\ndata: q\n\n", 1, "", "q");
    SSE("datax: no\ndata: y\n\n", 1, "", "y");
    SSE("Data: no\n\n", 0, "", "");
    SSE("\n\n\ndata: z\n\n\n", 1, "", "z");
    SSE("data: 1\n\ndata: 2\r\n\r\ndata: 3\r\rdata: 4\n", 4, "", "4");
    SSE("data: no end", 1, "", "no end");
    SSE("data: a\r\n", 1, "", "a");
    SSE("event: e\n", 0, "", "");
    SSE("data: x:y: z\n\n", 1, "", "x:y: z");
    SSE("verylongfieldname: v\ndata: w\n\n", 1, "", "w");

    /* offsets: a blank line before the block is not part of it */

    p = tap_dup("\n: c\ndata: a\n\ndata: b\r\n\r\n\rdata: c\r\r", &len);
    run(r, p, len, NULL, 0, buf, sizeof(buf));
    is_int(r->n, 3, "three events");
    is_uint(r->ev[0].start, 1, "comment line opens the first block");
    is_uint(r->ev[0].end, 14, "first block ends past its blank line");
    is_uint(r->ev[1].start, 14, "second starts there");
    is_uint(r->ev[1].end, 25, "CRLF blank line included");
    is_uint(r->ev[2].start, 26, "lone CR blank line skipped");
    is_uint(r->ev[2].end, len, "CR CR event ends the stream");
    free(p);

    /* a CR blank line waits for the next byte before dispatching */

    kr_sse_init(&s, buf, sizeof(buf));
    memset(r, 0, sizeof(rec_t));
    kr_sse_feed(&s, (const unsigned char *) "data: a\r\r", 9, record, r);
    is_int(r->n, 0, "CR blank line: not yet dispatched");
    kr_sse_feed(&s, (const unsigned char *) "\n", 1, record, r);
    is_int(r->n, 1, "dispatched with its LF");
    is_uint(r->ev[0].end, 10, "end includes the LF");
    kr_sse_feed(&s, (const unsigned char *) "data: b\r\r", 9, record, r);
    kr_sse_feed(&s, (const unsigned char *) "d", 1, record, r);
    is_int(r->n, 2, "dispatched by a following non-LF byte");
    is_uint(r->ev[1].end, 19, "end before that byte");
    kr_sse_feed(&s, (const unsigned char *) "ata: c\r\r", 8, record, r);
    kr_sse_finish(&s, record, r);
    is_int(r->n, 3, "finish dispatches a pending CR event");
    is_uint(r->ev[2].start, 19, "third starts at the 'd'");
    is_uint(r->ev[2].end, 28, "third ends at EOF");

    /* a failing callback stops the feed */

    p = tap_dup("data: 1\n\ndata: 2\n\ndata: 3\n\n", &len);
    memset(r, 0, sizeof(rec_t));
    r->stop_after = 2;
    kr_sse_init(&s, buf, sizeof(buf));
    rc = kr_sse_feed(&s, p, len, record, r);
    is_int(rc, -1, "callback error stops the feed");
    is_int(r->n, 2, "no event after the error");
    free(p);

    /* overflow right at the buffer size */

    kr_sse_init(&s, buf, 4);
    memset(r, 0, sizeof(rec_t));
    kr_sse_feed(&s, (const unsigned char *) "data: abcd\n\ndata: abcde\n\n"
                "data: ab\ndata: c\n\n", 43, record, r);
    is_int(r->n, 3, "three events with a 4-byte buffer");
    ok(r->ev[0].len == 4 && !r->ev[0].overflow, "exact fit: no overflow");
    ok(r->ev[1].len == 4 && r->ev[1].overflow, "one byte over: overflow");
    ok(r->ev[2].len == 4 && !r->ev[2].overflow, "joined lines fit exactly");
    is_str(r->last_data, "ab\nc", "joined data kept to the limit");

    kr_sse_init(&s, NULL, 0);
    memset(r, 0, sizeof(rec_t));
    kr_sse_feed(&s, (const unsigned char *) "data: x\n\n", 9, record, r);
    ok(r->n == 1 && r->ev[0].len == 0 && r->ev[0].overflow,
       "zero-size buffer still reports events");

    free(r);
}


int
main(int argc, char **argv)
{
    tap_init(argc, argv);

    test_syntax();
    test_fixtures();

    return tap_done();
}
