
/*
 * Copyright (C) kroute authors
 */


/*
 * Server-Sent Events parsing as the HTML living standard describes it
 * (fields, comments, LF, CR and CRLF line ends), fed byte ranges of any
 * size.  A blank line ended by a lone CR is dispatched once the next
 * byte shows it is not a CRLF, so event end offsets are exact.
 */


#include <string.h>

#include "kr_sse.h"


#define KR_SSE_LINE_START   0
#define KR_SSE_FIELD        1
#define KR_SSE_VALUE_START  2
#define KR_SSE_VALUE        3
#define KR_SSE_IGNORE       4

#define KR_SSE_KIND_OTHER   0
#define KR_SSE_KIND_DATA    1
#define KR_SSE_KIND_EVENT   2


static void kr_sse_field_done(kr_sse_t *s);
static void kr_sse_append(kr_sse_t *s, const unsigned char *p, size_t n);
static int kr_sse_dispatch(kr_sse_t *s, uint64_t end, kr_sse_event_pt cb,
    void *ctx);


void
kr_sse_init(kr_sse_t *s, unsigned char *buf, size_t size)
{
    memset(s, 0, sizeof(kr_sse_t));

    s->buf = buf;
    s->size = size;
    s->state = KR_SSE_LINE_START;
}


static void
kr_sse_append(kr_sse_t *s, const unsigned char *p, size_t n)
{
    size_t  room;

    room = s->size - s->len;

    if (n > room) {
        s->overflow = 1;
        n = room;
    }

    if (n) {
        memcpy(s->buf + s->len, p, n);
        s->len += n;
    }
}


static void
kr_sse_field_done(kr_sse_t *s)
{
    s->field_kind = KR_SSE_KIND_OTHER;

    if (s->field_len == 4 && memcmp(s->field, "data", 4) == 0) {
        s->field_kind = KR_SSE_KIND_DATA;

        if (s->have_data) {
            kr_sse_append(s, (const unsigned char *) "\n", 1);
        }

        s->have_data = 1;

    } else if (s->field_len == 5 && memcmp(s->field, "event", 5) == 0) {
        s->field_kind = KR_SSE_KIND_EVENT;
        s->event_len = 0;
    }
}


static int
kr_sse_dispatch(kr_sse_t *s, uint64_t end, kr_sse_event_pt cb, void *ctx)
{
    int             rc;
    kr_sse_event_t  ev;

    rc = 0;

    if (s->in_block && s->have_data) {
        ev.event.data = s->event;
        ev.event.len = s->event_len;
        ev.data = s->buf ? s->buf : (const unsigned char *) "";
        ev.len = s->len;
        ev.overflow = s->overflow;
        ev.start = s->start;
        ev.end = end;

        s->events++;

        rc = cb(ctx, &ev) == 0 ? 0 : -1;
    }

    s->len = 0;
    s->event_len = 0;
    s->have_data = 0;
    s->overflow = 0;
    s->in_block = 0;

    return rc;
}


int
kr_sse_feed(kr_sse_t *s, const unsigned char *p, size_t len,
    kr_sse_event_pt cb, void *ctx)
{
    size_t                n;
    unsigned char         c;
    const unsigned char  *end, *q;

    end = p + len;

    while (p < end) {
        c = *p;

        if (s->pending) {
            s->pending = 0;

            if (c == '\n') {
                s->offset++;
                p++;

                if (kr_sse_dispatch(s, s->offset, cb, ctx) != 0) {
                    return -1;
                }

                continue;
            }

            if (kr_sse_dispatch(s, s->offset, cb, ctx) != 0) {
                return -1;
            }
        }

        if (s->cr) {
            s->cr = 0;

            if (c == '\n') {
                s->offset++;
                p++;
                continue;
            }
        }

        if (c == '\r' || c == '\n') {
            s->offset++;
            p++;

            if (s->state == KR_SSE_LINE_START) {
                if (c == '\r') {
                    s->pending = 1;
                    continue;
                }

                if (kr_sse_dispatch(s, s->offset, cb, ctx) != 0) {
                    return -1;
                }

                continue;
            }

            if (s->state == KR_SSE_FIELD) {
                kr_sse_field_done(s);
            }

            s->state = KR_SSE_LINE_START;
            s->cr = (c == '\r');

            continue;
        }

        switch (s->state) {

        case KR_SSE_LINE_START:
            if (!s->in_block) {
                s->in_block = 1;
                s->start = s->offset;
            }

            if (c == ':') {
                s->state = KR_SSE_IGNORE;
                break;
            }

            s->field_len = 0;
            s->state = KR_SSE_FIELD;

            /* fall through */

        case KR_SSE_FIELD:
            if (c == ':') {
                kr_sse_field_done(s);
                s->state = KR_SSE_VALUE_START;
                break;
            }

            if (s->field_len < sizeof(s->field)) {
                s->field[s->field_len++] = (char) c;
            }

            break;

        case KR_SSE_VALUE_START:
            s->state = KR_SSE_VALUE;

            if (c == ' ') {
                break;
            }

            /* fall through */

        case KR_SSE_VALUE:
            for (q = p; q < end; q++) {
                if (*q <= '\r' && (*q == '\r' || *q == '\n')) {
                    break;
                }
            }

            n = (size_t) (q - p);

            if (s->field_kind == KR_SSE_KIND_DATA) {
                kr_sse_append(s, p, n);

            } else if (s->field_kind == KR_SSE_KIND_EVENT) {
                if (n > sizeof(s->event) - s->event_len) {
                    n = sizeof(s->event) - s->event_len;
                }

                memcpy(s->event + s->event_len, p, n);
                s->event_len += n;
            }

            n = (size_t) (q - p);
            s->offset += n;
            p = q;

            continue;

        default: /* KR_SSE_IGNORE */
            break;
        }

        s->offset++;
        p++;
    }

    return 0;
}


int
kr_sse_finish(kr_sse_t *s, kr_sse_event_pt cb, void *ctx)
{
    int  rc;

    if (s->state == KR_SSE_FIELD) {
        kr_sse_field_done(s);
    }

    s->state = KR_SSE_LINE_START;
    s->pending = 0;
    s->cr = 0;

    /*
     * The standard drops an event that EOF cuts before its blank line;
     * a provider reply that ends without one still carries usage.
     */

    rc = kr_sse_dispatch(s, s->offset, cb, ctx);

    return rc;
}
