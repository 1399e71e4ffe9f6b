
/*
 * Copyright (C) kroute authors
 */


/*
 * Incremental Server-Sent Events parser for metering streamed replies.
 * It takes the stream in chunks split anywhere, keeps one event's data
 * in a buffer the caller sizes, and reports each event with its absolute
 * byte range in the stream, so a filter can also drop an event.
 */


#ifndef _KR_SSE_H_INCLUDED_
#define _KR_SSE_H_INCLUDED_


#include "kr_json.h"


#define KR_SSE_EVENT_LEN  64


typedef struct {
    kr_str_t              event;     /* "event:" value, len 0 if none */
    const unsigned char  *data;      /* data lines joined by '\n' */
    size_t                len;
    int                   overflow;  /* data truncated to the buffer */
    uint64_t              start;     /* first byte of the first line */
    uint64_t              end;       /* past the dispatching blank line */
} kr_sse_event_t;


/* returns 0 to go on, anything else stops kr_sse_feed() with -1 */
typedef int (*kr_sse_event_pt)(void *ctx, const kr_sse_event_t *ev);


typedef struct {
    unsigned char  *buf;
    size_t          size;
    size_t          len;

    unsigned char   event[KR_SSE_EVENT_LEN];
    size_t          event_len;
    char            field[8];
    size_t          field_len;

    uint64_t        offset;          /* bytes consumed so far */
    uint64_t        start;
    uint64_t        events;          /* events dispatched */

    unsigned        state:3;
    unsigned        field_kind:2;
    unsigned        in_block:1;
    unsigned        have_data:1;
    unsigned        overflow:1;
    unsigned        cr:1;            /* last byte was a CR */
    unsigned        pending:1;       /* blank line ended by CR seen */
} kr_sse_t;


void kr_sse_init(kr_sse_t *s, unsigned char *buf, size_t size);
int kr_sse_feed(kr_sse_t *s, const unsigned char *p, size_t len,
    kr_sse_event_pt cb, void *ctx);

/* end of stream: an event not closed by a blank line is dispatched too */
int kr_sse_finish(kr_sse_t *s, kr_sse_event_pt cb, void *ctx);


#endif /* _KR_SSE_H_INCLUDED_ */
