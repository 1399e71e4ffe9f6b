
/*
 * Copyright (C) kroute authors
 */

/*
 * Response metering.  The header filter notes the status, the stream
 * type and any upstream compression and adds the X-Kroute-* headers;
 * the body filter reads usage from a JSON response or from the SSE
 * events of a stream as the bytes go by, inflating a copy when the
 * provider compressed them.  Bytes are passed on as they arrive; only
 * when kroute itself asked for streamed usage does it hold the tail of
 * an unfinished event, so that the usage event the client did not ask
 * for can be taken out.  The log phase turns usage into cost and
 * counts the request in the shared zone.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


static ngx_int_t ngx_http_kroute_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_kroute_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_kroute_add_header(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);
static ngx_int_t ngx_http_kroute_meter(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char *p, size_t len);
static ngx_int_t ngx_http_kroute_inflate_init(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx);
static ngx_int_t ngx_http_kroute_meter_plain(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char *p, size_t len);
static int ngx_http_kroute_sse_event(void *data, const kr_sse_event_t *ev);
static ngx_int_t ngx_http_kroute_strip(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, ngx_chain_t *in);
static size_t ngx_http_kroute_busy(ngx_http_kroute_ctx_t *ctx);
static ngx_int_t ngx_http_kroute_unedited(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_kroute_strip_bytes(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char *p, size_t len, ngx_chain_t ***ll);
static ngx_int_t ngx_http_kroute_emit_ready(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, size_t ready, ngx_chain_t ***ll);
static ngx_int_t ngx_http_kroute_emit(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char *p, size_t len, ngx_chain_t ***ll);
static void ngx_http_kroute_response_done(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx);
static size_t ngx_http_kroute_usage_tail(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char **doc);
static ngx_http_kroute_model_t *ngx_http_kroute_billed_model(
    ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx);
static void *ngx_http_kroute_zalloc(void *opaque, u_int items, u_int size);
static void ngx_http_kroute_zfree(void *opaque, void *address);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_int_t
ngx_http_kroute_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_kroute_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_kroute_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                    v;
    ngx_http_kroute_ctx_t       *ctx;
    ngx_http_kroute_loc_conf_t  *klcf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_kroute_module);

    if (ctx == NULL || ctx->own_reply || !ctx->routed) {
        return ngx_http_next_header_filter(r);
    }

    klcf = ngx_http_get_module_loc_conf(r, ngx_http_kroute_module);

    ctx->status = r->headers_out.status;

    if (klcf->headers) {
        if (ctx->model) {
            if (ngx_http_kroute_add_header(r, "X-Kroute-Model",
                                           &ctx->model->name)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (ctx->task < KR_TASK_N) {
            if (ngx_http_kroute_add_header(r, "X-Kroute-Task",
                                      ngx_http_kroute_task_label(r, ctx->task))
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        v.data = ctx->request_id;
        v.len = sizeof(ctx->request_id);

        if (ngx_http_kroute_add_header(r, "X-Kroute-Request-Id", &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (r->header_only) {
        return ngx_http_next_header_filter(r);
    }

    ctx->metering = 1;

    if (r->headers_out.content_type.len >= sizeof("text/event-stream") - 1
        && ngx_strncasecmp(r->headers_out.content_type.data,
                           (u_char *) "text/event-stream",
                           sizeof("text/event-stream") - 1) == 0)
    {
        ctx->sse_response = 1;
    }

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->value.len)
    {
        v = r->headers_out.content_encoding->value;

        if ((v.len == 4 && ngx_strncasecmp(v.data, (u_char *) "gzip", 4) == 0)
            || (v.len == 7
                && ngx_strncasecmp(v.data, (u_char *) "deflate", 7) == 0))
        {
            ctx->gzip = 1;

        } else if (!(v.len == 8
                     && ngx_strncasecmp(v.data, (u_char *) "identity", 8)
                        == 0))
        {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "kroute: cannot meter a response with "
                          "Content-Encoding \"%V\"", &v);
            ctx->zerror = 1;
        }
    }

    if (ctx->sse_response) {
        ctx->body_size = klcf->response_buffer_size;
        ctx->body = ngx_pnalloc(r->pool, ctx->body_size);
        if (ctx->body == NULL) {
            return NGX_ERROR;
        }

        kr_sse_init(&ctx->sse, ctx->body, ctx->body_size);

        if (ctx->injected && !ctx->zerror) {
            ctx->hold = ngx_create_temp_buf(r->pool,
                                            klcf->response_buffer_size);
            if (ctx->hold == NULL) {
                return NGX_ERROR;
            }

            if (ctx->gzip) {
                if (ngx_http_kroute_inflate_init(r, ctx) != NGX_OK) {
                    return NGX_ERROR;
                }

                /* the stream is edited: it goes out inflated */

                if (!ctx->zerror) {
                    r->headers_out.content_encoding->hash = 0;
                    r->headers_out.content_encoding = NULL;
                }
            }

            ngx_http_clear_content_length(r);
            ngx_http_clear_accept_ranges(r);
        }

    } else {
        ctx->body_size = klcf->response_buffer_size;

        /* a JSON body of known length gets just the room it needs */

        if (!ctx->gzip
            && r->headers_out.content_length_n >= 0
            && r->headers_out.content_length_n < (off_t) ctx->body_size)
        {
            ctx->body_size = (size_t) r->headers_out.content_length_n + 1;
        }
    }

    r->filter_need_in_memory = 1;

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_kroute_add_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_uint_t              last;
    ngx_chain_t            *cl;
    ngx_http_kroute_ctx_t  *ctx;

    if (in == NULL || r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_kroute_module);

    if (ctx == NULL || !ctx->metering) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->hold && !ctx->unedited) {
        return ngx_http_kroute_strip(r, ctx, in);
    }

    last = 0;

    for (cl = in; cl; cl = cl->next) {

        if (ngx_buf_in_memory(cl->buf) && cl->buf->last > cl->buf->pos) {

            if (ctx->first_byte == 0) {
                ctx->first_byte = ngx_current_msec;
            }

            if (ngx_http_kroute_meter(r, ctx, cl->buf->pos,
                                      cl->buf->last - cl->buf->pos)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (cl->buf->last_buf) {
            last = 1;
        }
    }

    if (last) {
        ngx_http_kroute_response_done(r, ctx);
    }

    return ngx_http_next_body_filter(r, in);
}


static ngx_int_t
ngx_http_kroute_meter(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    u_char *p, size_t len)
{
    int        rc;
    size_t     n;
    z_stream  *zs;

    if (ctx->zerror) {
        return NGX_OK;
    }

    if (!ctx->gzip) {
        return ngx_http_kroute_meter_plain(r, ctx, p, len);
    }

    if (ctx->zstream == NULL) {
        if (ngx_http_kroute_inflate_init(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ctx->zerror) {
            return NGX_OK;
        }
    }

    zs = ctx->zstream;

    zs->next_in = p;
    zs->avail_in = len;

    while (zs->avail_in) {
        zs->next_out = ctx->zbuf;
        zs->avail_out = 16384;

        rc = inflate(zs, Z_NO_FLUSH);

        n = 16384 - zs->avail_out;

        if (n && ngx_http_kroute_meter_plain(r, ctx, ctx->zbuf, n) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (rc == Z_STREAM_END) {
            inflateEnd(zs);
            ctx->zerror = 1;
            return NGX_OK;
        }

        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "kroute: inflate() failed on the response: %d",
                          rc);
            inflateEnd(zs);
            ctx->zerror = 1;
            return NGX_OK;
        }

        if (rc == Z_BUF_ERROR && n == 0) {
            break;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_inflate_init(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx)
{
    z_stream  *zs;

    zs = ngx_pcalloc(r->pool, sizeof(z_stream));
    ctx->zbuf = ngx_pnalloc(r->pool, 16384);

    if (zs == NULL || ctx->zbuf == NULL) {
        return NGX_ERROR;
    }

    zs->zalloc = ngx_http_kroute_zalloc;
    zs->zfree = ngx_http_kroute_zfree;
    zs->opaque = r->pool;

    /* 32 + MAX_WBITS: a gzip or zlib header, told apart by zlib */

    if (inflateInit2(zs, 32 + MAX_WBITS) != Z_OK) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "kroute: inflateInit2() failed");
        ctx->zerror = 1;
        return NGX_OK;
    }

    ctx->zstream = zs;

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_meter_plain(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    u_char *p, size_t len)
{
    size_t  n;

    if (ctx->sse_response) {
        if (kr_sse_feed(&ctx->sse, p, len, ngx_http_kroute_sse_event, ctx)
            != 0)
        {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    /*
     * A JSON response is kept whole up to kroute_response_buffer_size;
     * usage comes last in it, so a longer one keeps its tail.
     */

    if (ctx->body == NULL) {
        ctx->body = ngx_pnalloc(r->pool, ctx->body_size);
        if (ctx->body == NULL) {
            return NGX_ERROR;
        }
    }

    if (len >= ctx->body_size) {
        p += len - ctx->body_size;
        len = ctx->body_size;
        ctx->overflow = 1;
        ctx->body_len = 0;
    }

    if (ctx->body_len + len > ctx->body_size) {
        n = ctx->body_len + len - ctx->body_size;
        ngx_memmove(ctx->body, ctx->body + n, ctx->body_len - n);
        ctx->body_len -= n;
        ctx->overflow = 1;
    }

    ngx_memcpy(ctx->body + ctx->body_len, p, len);
    ctx->body_len += len;

    return NGX_OK;
}


static int
ngx_http_kroute_sse_event(void *data, const kr_sse_event_t *ev)
{
    ngx_http_kroute_ctx_t *ctx = data;

    int       usage_only;
    kr_str_t  doc, v;

    ctx->safe_off = ev->end;

    if (ev->overflow || ev->len == 0) {
        return 0;
    }

    if (ev->len == 6 && ngx_strncmp(ev->data, "[DONE]", 6) == 0) {
        return 0;
    }

    doc.data = ev->data;
    doc.len = ev->len;

    if (ctx->format == NGX_HTTP_KROUTE_FORMAT_ANTHROPIC) {
        (void) kr_usage_anthropic_event(&ctx->usage, &ev->event, ev->data,
                                        ev->len);

        if (kr_json_lookup(&doc, "delta.text", &v) == 1) {
            ctx->est_output_bytes += v.len;
        }

        return 0;
    }

    usage_only = 0;

    (void) kr_usage_openai_chunk(&ctx->usage, ev->data, ev->len, &usage_only);

    if (usage_only && ctx->hold && !ctx->unedited) {
        ctx->drop_start = ev->start;
        ctx->drop_end = ev->end;
        return 0;
    }

    if (kr_json_lookup(&doc, "choices", &v) == 1) {
        kr_json_iter_t  it;
        kr_str_t        choice, content;

        if (kr_json_iter_init(&it, &v) == 0
            && kr_json_array_next(&it, &choice) == 1
            && kr_json_lookup(&choice, "delta.content", &content) == 1
            && kr_json_is_string(&content))
        {
            ctx->est_output_bytes += content.len;
        }
    }

    return 0;
}


/*
 * The stream of a request whose usage kroute asked for itself.  Bytes
 * are copied to kroute's own buffers and passed on up to the end of the
 * last complete event; the unfinished tail waits in ctx->hold for the
 * rest of its event.  The usage-only event is left out.
 *
 * The copies are reused once sent.  A client slower than the provider
 * would let them pile up: past four buffers' worth waiting to be sent,
 * the rest of the stream goes on unedited, as the provider sends it, so
 * that the provider's buffers hold it back again.
 */

static ngx_int_t
ngx_http_kroute_strip(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    ngx_chain_t *in)
{
    int           zrc;
    size_t        n;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    z_stream     *zs;
    ngx_uint_t    last, flush;
    ngx_chain_t  *cl, *out, **ll;

    out = NULL;
    ll = &out;
    last = 0;
    flush = 0;

    if (!ctx->gzip && ngx_http_kroute_busy(ctx)
                      > 4 * (size_t) (ctx->hold->end - ctx->hold->start))
    {
        return ngx_http_kroute_unedited(r, ctx, in);
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf) {
            last = 1;
        }

        if (b->flush) {
            flush = 1;
        }

        if (!ngx_buf_in_memory(b) || b->last == b->pos) {
            continue;
        }

        if (ctx->first_byte == 0) {
            ctx->first_byte = ngx_current_msec;
        }

        if (!ctx->gzip) {
            rc = ngx_http_kroute_strip_bytes(r, ctx, b->pos, b->last - b->pos,
                                             &ll);
            b->pos = b->last;

            if (rc != NGX_OK) {
                return NGX_ERROR;
            }

            continue;
        }

        /* the client gets the stream inflated: it cannot be edited else */

        zs = ctx->zstream;

        zs->next_in = b->pos;
        zs->avail_in = b->last - b->pos;
        b->pos = b->last;

        while (zs->avail_in && !ctx->zerror) {
            zs->next_out = ctx->zbuf;
            zs->avail_out = 16384;

            zrc = inflate(zs, Z_NO_FLUSH);

            n = 16384 - zs->avail_out;

            if (n && ngx_http_kroute_strip_bytes(r, ctx, ctx->zbuf, n, &ll)
                     != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (zrc == Z_STREAM_END) {
                inflateEnd(zs);
                ctx->zerror = 1;
                break;
            }

            if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
                ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                              "kroute: inflate() failed on the response: %d",
                              zrc);
                inflateEnd(zs);
                ctx->zerror = 1;
                break;
            }

            if (zrc == Z_BUF_ERROR && n == 0) {
                break;
            }
        }
    }

    if (last) {
        (void) kr_sse_finish(&ctx->sse, ngx_http_kroute_sse_event, ctx);

        n = ctx->hold->last - ctx->hold->pos;

        if (ngx_http_kroute_emit_ready(r, ctx, n, &ll) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->emitted_off += n;
        ctx->hold->last = ctx->hold->pos;

        ngx_http_kroute_response_done(r, ctx);
    }

    if (last || flush) {
        cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        b = cl->buf;
        ngx_memzero(b, sizeof(ngx_buf_t));
        b->tag = (ngx_buf_tag_t) &ngx_http_kroute_module;
        b->last_buf = last;
        b->flush = flush;
        b->sync = 1;

        *ll = cl;
        ll = &cl->next;
    }

    *ll = NULL;

    rc = ngx_http_next_body_filter(r, out);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_kroute_module);

    return rc;
}


static size_t
ngx_http_kroute_busy(ngx_http_kroute_ctx_t *ctx)
{
    size_t        size;
    ngx_chain_t  *cl;

    size = 0;

    for (cl = ctx->busy; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    return size;
}


/*
 * From here on the stream is passed on as the provider sends it, after
 * the unfinished event kroute held; it is still metered.  The usage
 * event kroute asked for then reaches the client too.
 */

static ngx_int_t
ngx_http_kroute_unedited(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    ngx_chain_t *in)
{
    ngx_int_t     rc;
    ngx_uint_t    last;
    ngx_chain_t  *cl, *out, **ll;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "kroute: client reads slower than the provider streams, "
                  "the rest of the stream is not edited");

    ctx->unedited = 1;

    out = NULL;
    ll = &out;

    if (ngx_http_kroute_emit(r, ctx, ctx->hold->pos,
                             ctx->hold->last - ctx->hold->pos, &ll)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->hold->last = ctx->hold->pos;

    /* the held bytes were metered as they came: only the new ones */

    last = 0;

    for (cl = in; cl; cl = cl->next) {

        if (ngx_buf_in_memory(cl->buf) && cl->buf->last > cl->buf->pos
            && ngx_http_kroute_meter(r, ctx, cl->buf->pos,
                                     cl->buf->last - cl->buf->pos)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (cl->buf->last_buf) {
            last = 1;
        }
    }

    if (last) {
        ngx_http_kroute_response_done(r, ctx);
    }

    *ll = in;

    rc = ngx_http_next_body_filter(r, out);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_kroute_module);

    return rc;
}


static ngx_int_t
ngx_http_kroute_strip_bytes(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    u_char *p, size_t len, ngx_chain_t ***ll)
{
    size_t  n, ready;

    while (len) {
        n = ngx_min(len, (size_t) (ctx->hold->end - ctx->hold->last));

        if (kr_sse_feed(&ctx->sse, p, n, ngx_http_kroute_sse_event, ctx) != 0)
        {
            return NGX_ERROR;
        }

        ctx->hold->last = ngx_cpymem(ctx->hold->last, p, n);
        p += n;
        len -= n;

        if (ctx->safe_off < ctx->emitted_off) {
            ctx->safe_off = ctx->emitted_off;
        }

        ready = ctx->safe_off - ctx->emitted_off;

        if (ready == 0 && ctx->hold->last == ctx->hold->end) {
            /* an event longer than the buffer: it goes on as is */
            ready = ctx->hold->last - ctx->hold->pos;
        }

        if (ready == 0) {
            continue;
        }

        if (ngx_http_kroute_emit_ready(r, ctx, ready, ll) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->emitted_off += ready;

        n = ctx->hold->last - ctx->hold->pos - ready;
        ngx_memmove(ctx->hold->pos, ctx->hold->pos + ready, n);
        ctx->hold->last = ctx->hold->pos + n;
    }

    return NGX_OK;
}


/*
 * Passes on the first "ready" bytes of ctx->hold, less the usage event
 * when it lies within them.
 */

static ngx_int_t
ngx_http_kroute_emit_ready(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    size_t ready, ngx_chain_t ***ll)
{
    off_t      from, to;
    ngx_int_t  rc;

    from = ctx->emitted_off;
    to = from + ready;

    if (ctx->drop_end == 0 || ctx->drop_end > to) {
        return ngx_http_kroute_emit(r, ctx, ctx->hold->pos, ready, ll);
    }

    if (ctx->drop_start < from) {
        /* partly passed on already with an oversized event */
        ctx->drop_end = 0;
        return ngx_http_kroute_emit(r, ctx, ctx->hold->pos, ready, ll);
    }

    rc = ngx_http_kroute_emit(r, ctx, ctx->hold->pos,
                              ctx->drop_start - from, ll);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_kroute_emit(r, ctx, ctx->hold->pos + (ctx->drop_end - from),
                              to - ctx->drop_end, ll);

    ctx->drop_end = 0;

    return rc;
}


static ngx_int_t
ngx_http_kroute_emit(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    u_char *p, size_t len, ngx_chain_t ***ll)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (len == 0) {
        return NGX_OK;
    }

    cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    b = cl->buf;

    if (b->start == NULL || (size_t) (b->end - b->start) < len) {
        ngx_memzero(b, sizeof(ngx_buf_t));

        b->start = ngx_palloc(r->pool, ngx_max(len, 4096));
        if (b->start == NULL) {
            return NGX_ERROR;
        }

        b->end = b->start + ngx_max(len, 4096);
    }

    b->pos = b->start;
    b->last = ngx_cpymem(b->pos, p, len);
    b->temporary = 1;
    b->memory = 0;
    b->last_buf = 0;
    b->flush = 0;
    b->sync = 0;
    b->tag = (ngx_buf_tag_t) &ngx_http_kroute_module;

    **ll = cl;
    *ll = &cl->next;

    return NGX_OK;
}


static void
ngx_http_kroute_response_done(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx)
{
    u_char  *body;
    size_t   len;

    if (ctx->last_byte) {
        return;
    }

    ctx->last_byte = ngx_current_msec;

    if (ctx->sse_response) {
        if (!ctx->hold || ctx->unedited) {
            (void) kr_sse_finish(&ctx->sse, ngx_http_kroute_sse_event, ctx);
        }

        return;
    }

    if (ctx->status >= NGX_HTTP_BAD_REQUEST) {
        (void) kr_usage_error(&ctx->usage, ctx->status, ctx->body,
                              ctx->body_len);
        return;
    }

    if (ctx->body_len == 0) {
        return;
    }

    body = ctx->body;
    len = ctx->body_len;

    if (ctx->overflow) {

        /*
         * Only the tail of a long response is kept; providers put usage
         * last, so the last "usage" member is read on its own.
         */

        len = ngx_http_kroute_usage_tail(r, ctx, &body);

        if (len == 0) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "kroute: no usage in the last %uz bytes of a "
                          "long response, its usage is estimated",
                          ctx->body_size);
            return;
        }
    }

    if (ctx->format == NGX_HTTP_KROUTE_FORMAT_ANTHROPIC) {
        (void) kr_usage_anthropic_response(&ctx->usage, body, len);

    } else {
        (void) kr_usage_openai_response(&ctx->usage, body, len);
    }
}


static size_t
ngx_http_kroute_usage_tail(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    u_char **doc)
{
    u_char        *p, *last, *d;
    const u_char  *end;

    p = ctx->body + ctx->body_len;

    while (p - ctx->body >= 7) {
        p--;

        if (ngx_strncmp(p - 6, "\"usage\"", 7) != 0) {
            continue;
        }

        last = ctx->body + ctx->body_len;
        p++;

        while (p < last && (*p == ' ' || *p == '\t' || *p == CR || *p == LF))
        {
            p++;
        }

        if (p == last || *p != ':') {
            return 0;
        }

        p++;

        end = kr_json_skip(p, last);
        if (end == NULL) {
            return 0;
        }

        d = ngx_pnalloc(r->pool, sizeof("{\"usage\":}") - 1 + (end - p));
        if (d == NULL) {
            return 0;
        }

        *doc = d;

        d = ngx_cpymem(d, "{\"usage\":", sizeof("{\"usage\":") - 1);
        d = ngx_cpymem(d, p, end - p);
        *d++ = '}';

        return d - *doc;
    }

    return 0;
}


/*
 * Usage and cost of the request, computed once, from the log phase or
 * from the first variable that needs them.
 */

void
ngx_http_kroute_finalize(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx)
{
    uint64_t                  est;
    ngx_uint_t                status, partial;
    kr_usage_t               *u;
    ngx_http_kroute_model_t  *m;

    if (ctx->finalized) {
        return;
    }

    ctx->finalized = 1;

    if (ctx->last_byte == 0) {
        ctx->last_byte = ngx_current_msec;
    }

    if (ctx->status == 0) {
        ctx->status = r->headers_out.status;
    }

    status = ctx->status;

    if (ctx->status >= NGX_HTTP_BAD_REQUEST
        && ctx->usage.error_class == KR_ERROR_NONE && ctx->sse_response)
    {
        (void) kr_usage_error(&ctx->usage, ctx->status, NULL, 0);
    }

    ctx->dims[NGX_HTTP_KROUTE_DIM_STATUS].data =
                          (u_char *) (status >= 500 ? "5xx"
                                      : status >= 400 ? "4xx"
                                      : status >= 300 ? "3xx"
                                      : status >= 200 ? "2xx" : "1xx");
    ctx->dims[NGX_HTTP_KROUTE_DIM_STATUS].len = 3;

    if (ctx->task < KR_TASK_N) {
        ctx->dims[NGX_HTTP_KROUTE_DIM_TASK] =
                                     *ngx_http_kroute_task_label(r, ctx->task);

    } else {
        ctx->dims[NGX_HTTP_KROUTE_DIM_TASK].data =
                          (u_char *) (ctx->unparsed ? "unparsed" : "none");
        ctx->dims[NGX_HTTP_KROUTE_DIM_TASK].len =
                          ngx_strlen(ctx->dims[NGX_HTTP_KROUTE_DIM_TASK].data);
    }

    if (ctx->model) {
        ctx->dims[NGX_HTTP_KROUTE_DIM_MODEL] = ctx->model->name;
    }

    if (ctx->provider) {
        ctx->dims[NGX_HTTP_KROUTE_DIM_PROVIDER] = ctx->provider->name;
    }

    u = &ctx->usage;

    if (ctx->own_reply || !ctx->routed) {
        ctx->usage_source = NGX_HTTP_KROUTE_USAGE_NONE;
        goto zero;
    }

    if (status >= NGX_HTTP_BAD_REQUEST || u->error_class != KR_ERROR_NONE) {
        if (u->error_class == KR_ERROR_NONE) {
            (void) kr_usage_error(u, status, NULL, 0);
        }

        ctx->usage_source = NGX_HTTP_KROUTE_USAGE_NONE;
        goto zero;
    }

    if (u->have_usage
        && (u->input > NGX_HTTP_KROUTE_TOKENS_MAX
            || u->output > NGX_HTTP_KROUTE_TOKENS_MAX
            || u->cached > u->input || u->cache_write > u->input
            || u->reasoning > u->output))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "kroute: provider usage out of range (input %L, "
                      "output %L), the request is estimated",
                      u->input, u->output);
        u->have_usage = 0;
    }

    /*
     * An Anthropic stream gives placeholder usage in message_start and
     * the real one in message_delta: a stream cut before that is only
     * partly known.
     */

    partial = ctx->sse_response
              && ctx->format == NGX_HTTP_KROUTE_FORMAT_ANTHROPIC
              && u->finish_reason[0] == '\0';

    if (u->have_usage && u->input >= 0 && u->output >= 0 && !partial) {
        ctx->usage_source = NGX_HTTP_KROUTE_USAGE_PROVIDER;

    } else {
        /* never a silent 0: an estimate, marked as such */
        ctx->usage_source = NGX_HTTP_KROUTE_USAGE_ESTIMATE;

        est = (ctx->est_output_bytes + 3) / 4;

        if (u->have_usage && u->input >= 0 && u->output >= 0) {
            /* the input the provider counted stands */
            u->output = ngx_max((uint64_t) u->output, est);

        } else {
            u->input = ctx->est_input;
            u->output = est;
            u->cached = 0;
            u->cache_write = 0;
            u->reasoning = 0;
        }
    }

    if (u->cached < 0) {
        u->cached = 0;
    }

    if (u->cache_write < 0) {
        u->cache_write = 0;
    }

    if (u->reasoning < 0) {
        u->reasoning = 0;
    }

    m = ngx_http_kroute_billed_model(r, ctx);

    ctx->cost_pusd = m ? kr_cost_pusd(&m->price, u) : 0;

    return;

zero:

    u->input = 0;
    u->output = 0;
    u->cached = 0;
    u->cache_write = 0;
    u->reasoning = 0;
    ctx->cost_pusd = 0;
}


/*
 * The model to bill is the one the provider reports, often a dated
 * snapshot ("gpt-4o-2024-08-06") of a catalog name; the routed model
 * is used when the catalog knows neither.
 */

static ngx_http_kroute_model_t *
ngx_http_kroute_billed_model(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx)
{
    u_char                       *name;
    size_t                        len;
    ngx_http_kroute_model_t      *m;
    ngx_http_kroute_main_conf_t  *kmcf;

    kmcf = ngx_http_get_module_main_conf(r, ngx_http_kroute_module);

    name = (u_char *) ctx->usage.model;
    len = ngx_strlen(name);

    if (len == 0) {
        return ctx->model;
    }

    m = ngx_http_kroute_find_model(kmcf, name, len);
    if (m) {
        return m;
    }

    /* "-YYYY-MM-DD" or "-YYYYMMDD" */

    if (len > 11 && name[len - 11] == '-' && name[len - 6] == '-'
        && name[len - 3] == '-')
    {
        m = ngx_http_kroute_find_model(kmcf, name, len - 11);
        if (m) {
            return m;
        }
    }

    if (len > 9 && name[len - 9] == '-') {
        m = ngx_http_kroute_find_model(kmcf, name, len - 9);
        if (m) {
            return m;
        }
    }

    return ctx->model;
}


ngx_int_t
ngx_http_kroute_log_handler(ngx_http_request_t *r)
{
    ngx_http_kroute_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_kroute_module);

    if (ctx == NULL || !ctx->done) {
        return NGX_OK;
    }

    ngx_http_kroute_finalize(r, ctx);
    ngx_http_kroute_shm_account(r, ctx);

    return NGX_OK;
}


static void *
ngx_http_kroute_zalloc(void *opaque, u_int items, u_int size)
{
    ngx_pool_t *pool = opaque;

    return ngx_palloc(pool, items * size);
}


static void
ngx_http_kroute_zfree(void *opaque, void *address)
{
    /* the request pool frees it */
}
