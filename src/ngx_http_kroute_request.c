
/*
 * Copyright (C) kroute authors
 */

/*
 * The request side of the gateway.  In the precontent phase kroute
 * reads the whole client body (from memory or the temp file), extracts
 * what routing needs, classifies the task, picks the model and rewrites
 * the body in place of the old one: the "model" value is swapped and,
 * for streams, stream_options.include_usage is asked for, without
 * re-serialising the JSON.  The proxy then sends the new body to the
 * URL in $kroute_upstream.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


static void ngx_http_kroute_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_kroute_process(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx);
static ngx_int_t ngx_http_kroute_read_body(ngx_http_request_t *r,
    ngx_http_kroute_loc_conf_t *klcf, u_char **body, size_t *len);
static ngx_int_t ngx_http_kroute_attribution(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char *body);
static size_t ngx_http_kroute_utf8_len(u_char *p, u_char *last);
static void ngx_http_kroute_dim(ngx_http_request_t *r, ngx_str_t *dst,
    ngx_str_t *src, size_t max);
static void ngx_http_kroute_classify(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, ngx_http_kroute_main_conf_t *kmcf);
static ngx_int_t ngx_http_kroute_route(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char *body);
static ngx_int_t ngx_http_kroute_rewrite(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char *body, size_t len);
static ngx_int_t ngx_http_kroute_set_upstream(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx);
static ngx_http_kroute_provider_t *ngx_http_kroute_default_provider(
    ngx_http_kroute_main_conf_t *kmcf, ngx_http_kroute_loc_conf_t *klcf);
static ngx_int_t ngx_http_kroute_fail(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, ngx_uint_t status, const char *code,
    u_char *fmt, ...);


ngx_int_t
ngx_http_kroute_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_kroute_ctx_t       *ctx;
    ngx_http_kroute_loc_conf_t  *klcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    klcf = ngx_http_get_module_loc_conf(r, ngx_http_kroute_module);

    if (!klcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_kroute_module);

    if (ctx) {
        if (!ctx->done) {
            return NGX_DONE;
        }

        if (ctx->own_reply) {
            rc = ngx_http_kroute_send_error(r, ctx->status, ctx->error_code,
                                            &ctx->route_reason);
            ngx_http_finalize_request(r, rc);
            return NGX_DONE;
        }

        return NGX_DECLINED;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_kroute_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    kr_usage_init(&ctx->usage);
    ctx->task = KR_TASK_N;
    ctx->rule = -1;
    ctx->format = klcf->format;

    ngx_http_set_ctx(r, ctx, ngx_http_kroute_module);

    if (r->method != NGX_HTTP_POST) {
        rc = ngx_http_kroute_fail(r, ctx, NGX_HTTP_NOT_ALLOWED,
                                  "method_not_allowed",
                                  (u_char *) "chat completions are "
                                  "requested with POST");
        goto reply;
    }

    if (r->headers_in.content_length_n > (off_t) klcf->body_max_size) {
        rc = ngx_http_kroute_fail(r, ctx, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                  "request_too_large",
                                  (u_char *) "request body of %O bytes is "
                                  "over the gateway's limit of %uz bytes",
                                  r->headers_in.content_length_n,
                                  klcf->body_max_size);
        goto reply;
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_kroute_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;

reply:

    ctx->done = 1;

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_kroute_send_error(r, ctx->status, ctx->error_code,
                                    &ctx->route_reason);
    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static void
ngx_http_kroute_body_handler(ngx_http_request_t *r)
{
    ngx_int_t               rc;
    ngx_http_kroute_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_kroute_module);

    rc = ngx_http_kroute_process(r, ctx);

    ctx->done = 1;

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * Returns NGX_OK both when the request goes on upstream and when kroute
 * answers it itself (ctx->own_reply); NGX_ERROR only on allocation
 * failures.
 */

static ngx_int_t
ngx_http_kroute_process(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx)
{
    u_char                       *body;
    size_t                        len;
    ngx_int_t                     rc;
    const char                   *err;
    ngx_http_kroute_loc_conf_t   *klcf;
    ngx_http_kroute_main_conf_t  *kmcf;

    klcf = ngx_http_get_module_loc_conf(r, ngx_http_kroute_module);
    kmcf = ngx_http_get_module_main_conf(r, ngx_http_kroute_module);

    rc = ngx_http_kroute_read_body(r, klcf, &body, &len);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ctx->done = 1;
        return ngx_http_kroute_fail(r, ctx,
                                    NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                    "request_too_large",
                                    (u_char *) "request body is over the "
                                    "gateway's limit of %uz bytes",
                                    klcf->body_max_size) == NGX_ERROR
               ? NGX_ERROR : NGX_OK;
    }

    if (kr_request_parse(&ctx->req, body, len, &err) != 0) {

        if (klcf->invalid_body == NGX_HTTP_KROUTE_INVALID_REJECT) {
            return ngx_http_kroute_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                        "invalid_request_body",
                                        (u_char *) "%s", err)
                   == NGX_ERROR ? NGX_ERROR : NGX_OK;
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "kroute: passing unparsed request body: %s", err);

        ctx->unparsed = 1;
        ngx_str_set(&ctx->route_reason, "unparsed body passed through");

        if (ngx_http_kroute_attribution(r, ctx, NULL) != NGX_OK) {
            return NGX_ERROR;
        }

        if (klcf->fallback) {
            ctx->model = klcf->fallback;
            ctx->provider = klcf->fallback->provider;

        } else {
            ctx->provider = ngx_http_kroute_default_provider(kmcf, klcf);
        }

        if (ctx->provider == NULL) {
            return ngx_http_kroute_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                        "invalid_request_body",
                                        (u_char *) "%s", err)
                   == NGX_ERROR ? NGX_ERROR : NGX_OK;
        }

        return ngx_http_kroute_set_upstream(r, ctx);
    }

    if (ngx_http_kroute_attribution(r, ctx, body) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->est_input = kr_request_estimate_input_tokens(&ctx->req);

    ngx_http_kroute_classify(r, ctx, kmcf);

    rc = ngx_http_kroute_route(r, ctx, body);

    if (rc != NGX_OK || ctx->own_reply) {
        return rc;
    }

    if (ngx_http_kroute_rewrite(r, ctx, body, len) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_kroute_set_upstream(r, ctx);
}


/*
 * Gives the client body as one piece of memory: the buffer itself when
 * nginx holds it in one, else a copy read from the buffers and the temp
 * file.  NGX_DECLINED when it is over kroute_body_max_size.
 */

static ngx_int_t
ngx_http_kroute_read_body(ngx_http_request_t *r,
    ngx_http_kroute_loc_conf_t *klcf, u_char **body, size_t *len)
{
    u_char       *p;
    off_t         size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *body = (u_char *) "";
    *len = 0;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    if (size > (off_t) klcf->body_max_size) {
        return NGX_DECLINED;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        *body = cl->buf->pos;
        *len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    *body = ngx_pnalloc(r->pool, size + 1);
    if (*body == NULL) {
        return NGX_ERROR;
    }

    p = *body;

    for ( /* void */ ; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);

            if (n != b->file_last - b->file_pos) {
                ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                              "kroute: short read of request body file "
                              "\"%V\"", &b->file->name);
                return NGX_ERROR;
            }

            p += n;
            continue;
        }

        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    *len = p - *body;

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_attribution(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, u_char *body)
{
    u_char                      *p;
    uint32_t                     rnd;
    ngx_str_t                    v;
    ngx_uint_t                   i;
    kr_str_t                     raw;
    ngx_http_kroute_loc_conf_t  *klcf;

    klcf = ngx_http_get_module_loc_conf(r, ngx_http_kroute_module);

    p = ctx->request_id;

    for (i = 0; i < 4; i++) {
        rnd = (uint32_t) ngx_random();
        p = ngx_hex_dump(p, (u_char *) &rnd, sizeof(uint32_t));
    }

    if (klcf->feature) {
        if (ngx_http_complex_value(r, klcf->feature, &v) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_http_kroute_dim(r, &ctx->dims[NGX_HTTP_KROUTE_DIM_FEATURE], &v,
                            NGX_HTTP_KROUTE_DIM_MAX);
    }

    if (klcf->cohort) {
        if (ngx_http_complex_value(r, klcf->cohort, &v) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_http_kroute_dim(r, &ctx->dims[NGX_HTTP_KROUTE_DIM_COHORT], &v,
                            NGX_HTTP_KROUTE_DIM_MAX);
    }

    if (klcf->agent) {
        if (ngx_http_complex_value(r, klcf->agent, &v) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_http_kroute_dim(r, &ctx->dims[NGX_HTTP_KROUTE_DIM_AGENT], &v,
                            NGX_HTTP_KROUTE_DIM_MAX);
    }

    if (klcf->user) {
        if (ngx_http_complex_value(r, klcf->user, &v) != NGX_OK) {
            return NGX_ERROR;
        }

    } else if (body && ctx->req.user.len) {
        raw.data = ctx->req.user.data - 1;
        raw.len = ctx->req.user.len + 2;

        v.len = ngx_min(ctx->req.user.len, 256);
        v.data = ngx_pnalloc(r->pool, v.len);
        if (v.data == NULL) {
            return NGX_ERROR;
        }

        v.len = kr_json_string_decode(&raw, v.data, v.len);

    } else {
        ngx_str_null(&v);
    }

    /* the user is never a metrics label: it goes to the trace only */

    ngx_http_kroute_dim(r, &ctx->user, &v, 256);

    return NGX_OK;
}


/*
 * The length of the well-formed UTF-8 character at p (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0.
 */

static size_t
ngx_http_kroute_utf8_len(u_char *p, u_char *last)
{
    size_t   n, i;
    u_char   lo, hi;

    if (*p >= 0xc2 && *p <= 0xdf) {
        n = 2;
        lo = 0x80;
        hi = 0xbf;

    } else if (*p == 0xe0) {
        n = 3;
        lo = 0xa0;
        hi = 0xbf;

    } else if (*p == 0xed) {
        n = 3;
        lo = 0x80;
        hi = 0x9f;

    } else if (*p >= 0xe1 && *p <= 0xef) {
        n = 3;
        lo = 0x80;
        hi = 0xbf;

    } else if (*p == 0xf0) {
        n = 4;
        lo = 0x90;
        hi = 0xbf;

    } else if (*p >= 0xf1 && *p <= 0xf3) {
        n = 4;
        lo = 0x80;
        hi = 0xbf;

    } else if (*p == 0xf4) {
        n = 4;
        lo = 0x80;
        hi = 0x8f;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return n;
}


/*
 * A dimension value as it may be stored and printed: control bytes and
 * bytes that are not valid UTF-8 become '_' (Prometheus refuses a whole
 * scrape over one bad label), and a value longer than max is cut at a
 * character boundary.
 */

static void
ngx_http_kroute_dim(ngx_http_request_t *r, ngx_str_t *dst, ngx_str_t *src,
    size_t max)
{
    u_char  *p, *s, *last, *start;
    size_t   n;

    /* src may be dst */

    s = src->data;
    last = src->data + src->len;

    p = ngx_pnalloc(r->pool, ngx_min(src->len, max));
    if (p == NULL) {
        ngx_str_null(dst);
        return;
    }

    dst->data = p;

    while (s < last) {

        if (*s < 0x80) {
            if ((size_t) (p - dst->data) + 1 > max) {
                break;
            }

            *p++ = (*s < 0x20 || *s == 0x7f) ? '_' : *s;
            s++;
            continue;
        }

        n = ngx_http_kroute_utf8_len(s, last);

        if (n == 0) {
            /* not UTF-8: one byte becomes '_' */
            s++;

            if ((size_t) (p - dst->data) + 1 > max) {
                break;
            }

            *p++ = '_';
            continue;
        }

        start = s;
        s += n;

        if ((size_t) (p - dst->data) + n > max) {
            break;
        }

        p = ngx_cpymem(p, start, n);
    }

    dst->len = p - dst->data;
}


static void
ngx_http_kroute_classify(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    ngx_http_kroute_main_conf_t *kmcf)
{
    int                          task;
    u_char                       system[KR_CLASSIFY_SYSTEM_MAX];
    u_char                       user[KR_CLASSIFY_HEAD_MAX
                                      + KR_CLASSIFY_TAIL_MAX + 1];
    ngx_int_t                    rule;
    kr_classify_input_t          in;
    kr_classify_result_t         res;
    ngx_http_kroute_loc_conf_t  *klcf;

    ngx_memzero(&in, sizeof(kr_classify_input_t));

    if (ctx->req.system_index >= 0) {
        in.system = system;
        in.system_len = kr_request_text_n(&ctx->req.system_content,
                                          ctx->req.system_text_len, system,
                                          sizeof(system), sizeof(system), 0);
    }

    if (ctx->req.last_user_index >= 0) {
        in.user = user;
        in.user_len = kr_request_text_n(&ctx->req.last_user_content,
                                        ctx->req.last_user_text_len, user,
                                        sizeof(user), KR_CLASSIFY_HEAD_MAX,
                                        KR_CLASSIFY_TAIL_MAX);
    }

    in.context_tokens = ctx->est_input;
    in.messages = ctx->req.n_messages;
    in.has_tools = ctx->req.has_tools;
    in.json_format = ctx->req.response_format
                         == KR_RESPONSE_FORMAT_JSON_OBJECT
                     || ctx->req.response_format
                         == KR_RESPONSE_FORMAT_JSON_SCHEMA;

    klcf = ngx_http_get_module_loc_conf(r, ngx_http_kroute_module);

    rule = ngx_http_kroute_rules_match(r, klcf, &in);

    if (rule >= 0) {
        ctx->rule = rule;
        ctx->task = ((ngx_http_kroute_rule_t *) klcf->rules->elts)[rule].task;
        return;
    }

    task = kr_classify(kmcf->classifier, &in, &res);

    ctx->task = (task >= 0 && task < KR_TASK_N) ? (ngx_uint_t) task
                                                 : KR_TASK_QA;
}


static ngx_int_t
ngx_http_kroute_route(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    u_char *body)
{
    int                             chosen;
    u_char                         *p;
    ngx_int_t                       bar;
    ngx_str_t                       v, *feature;
    kr_str_t                        raw;
    kr_route_input_t                in;
    kr_route_split_t               *split;
    kr_route_result_t               res;
    ngx_http_kroute_shm_t          *shm;
    ngx_http_kroute_model_t        *m;
    ngx_http_kroute_loc_conf_t     *klcf;
    ngx_http_kroute_main_conf_t    *kmcf;
    ngx_http_kroute_route_state_t  *st;

    klcf = ngx_http_get_module_loc_conf(r, ngx_http_kroute_module);
    kmcf = ngx_http_get_module_main_conf(r, ngx_http_kroute_module);

    raw.data = body + ctx->req.model_span.off;
    raw.len = ctx->req.model_span.len;

    ctx->model_requested.len = ngx_min(ctx->req.model.len, 256);
    ctx->model_requested.data = ngx_pnalloc(r->pool,
                                            ctx->model_requested.len);
    if (ctx->model_requested.data == NULL) {
        return NGX_ERROR;
    }

    ctx->model_requested.len = kr_json_string_decode(&raw,
                                                ctx->model_requested.data,
                                                ctx->model_requested.len);

    ngx_http_kroute_dim(r, &ctx->model_requested, &ctx->model_requested,
                        256);

    if (ctx->model_requested.len != klcf->route_alias.len
        || ngx_strncmp(ctx->model_requested.data, klcf->route_alias.data,
                       klcf->route_alias.len) != 0)
    {
        m = ngx_http_kroute_find_model(kmcf, ctx->model_requested.data,
                                       ctx->model_requested.len);
        if (m == NULL) {
            return ngx_http_kroute_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                        "model_not_found",
                                        (u_char *) "model \"%V\" is not in "
                                        "the gateway's catalog; use a "
                                        "catalog model or \"%V\"",
                                        &ctx->model_requested,
                                        &klcf->route_alias)
                   == NGX_ERROR ? NGX_ERROR : NGX_OK;
        }

        if (m->provider->format != klcf->format) {
            return ngx_http_kroute_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                        "model_not_found",
                                        (u_char *) "model \"%V\" is served "
                                        "in another API format than this "
                                        "endpoint's", &ctx->model_requested)
                   == NGX_ERROR ? NGX_ERROR : NGX_OK;
        }

        ctx->model = m;
        ctx->provider = m->provider;

        ctx->route_reason.data = ngx_pnalloc(r->pool, 64 + m->name.len);
        if (ctx->route_reason.data == NULL) {
            return NGX_ERROR;
        }

        ctx->route_reason.len = ngx_sprintf(ctx->route_reason.data,
                                            "pinned model=%V task=%s",
                                            &m->name, kr_task_name(ctx->task))
                                - ctx->route_reason.data;
        return NGX_OK;
    }

    bar = 0;

    if (klcf->quality_bar) {
        if (ngx_http_complex_value(r, klcf->quality_bar, &v) != NGX_OK) {
            return NGX_ERROR;
        }

        if (v.len) {
            bar = ngx_atoi(v.data, v.len);

            if (bar == NGX_ERROR || bar > 100) {
                return ngx_http_kroute_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                            "invalid_quality_bar",
                                            (u_char *) "quality bar \"%V\" "
                                            "is not a number from 0 to 100",
                                            &v)
                       == NGX_ERROR ? NGX_ERROR : NGX_OK;
            }
        }
    }

    ngx_memzero(&in, sizeof(kr_route_input_t));
    ngx_memzero(&res, sizeof(kr_route_result_t));

    in.est_input = ctx->est_input;
    in.max_tokens = ctx->req.max_tokens;
    in.max_completion_tokens = ctx->req.max_completion_tokens;
    in.n = ctx->req.n;
    in.task = (int) ctx->task;
    in.bar = (int) bar;
    in.format = (unsigned) klcf->format;
    in.now_ms = ngx_current_msec;
    in.provider_names = kmcf->provider_names;
    in.n_providers = kmcf->providers.nelts;
    in.splits = kmcf->splits.elts;
    in.n_splits = kmcf->splits.nelts;

    feature = &ctx->dims[NGX_HTTP_KROUTE_DIM_FEATURE];

    if (feature->len) {
        in.feature = kr_route_hash(feature->data, feature->len);
    }

    in.sticky = ctx->user.len
                ? kr_route_hash(ctx->user.data, ctx->user.len)
                : kr_route_hash(ctx->request_id, sizeof(ctx->request_id));

    res.explain = ngx_pnalloc(r->pool, KR_ROUTE_EXPLAIN_LEN);
    if (res.explain == NULL) {
        return NGX_ERROR;
    }

    res.explain_size = KR_ROUTE_EXPLAIN_LEN;

    st = kmcf->route_state;
    shm = kmcf->shm_zone ? kmcf->shm_zone->data : NULL;

    if (st && shm) {
        in.stats = st->stats;
        in.health = st->health;

        ngx_shmtx_lock(&shm->shpool->mutex);
        chosen = kr_route_pick(kmcf->route_models, kmcf->models.nelts, &in,
                               &res);
        ngx_shmtx_unlock(&shm->shpool->mutex);

    } else {
        chosen = kr_route_pick(kmcf->route_models, kmcf->models.nelts, &in,
                               &res);
    }

    if (chosen < 0) {

        if (klcf->fallback == NULL) {
            return ngx_http_kroute_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                        "no_model_meets_quality_bar",
                                        (u_char *) "no model in the "
                                        "gateway's catalog meets quality "
                                        "bar %i for task \"%s\"", bar,
                                        kr_task_name(ctx->task))
                   == NGX_ERROR ? NGX_ERROR : NGX_OK;
        }

        ctx->model = klcf->fallback;
        ctx->provider = klcf->fallback->provider;

        p = ngx_pnalloc(r->pool, res.explain_len + 16 + ctx->model->name.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ctx->route_reason.data = p;
        ctx->route_reason.len = ngx_sprintf(p, "%*s fallback=%V",
                                            res.explain_len, res.explain,
                                            &ctx->model->name) - p;
        return NGX_OK;
    }

    m = kmcf->models.elts;

    ctx->model = &m[chosen];
    ctx->provider = ctx->model->provider;

    ctx->route_reason.data = (u_char *) res.explain;
    ctx->route_reason.len = res.explain_len;

    if (res.split >= 0 && res.arm >= 0) {
        split = &((kr_route_split_t *) kmcf->splits.elts)[res.split];

        p = ngx_pnalloc(r->pool, split->name.len + NGX_INT_T_LEN + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ctx->arm.data = p;
        ctx->arm.len = ngx_sprintf(p, "%*s:%d", split->name.len,
                                   split->name.data, res.arm) - p;

        ngx_http_kroute_dim(r, &ctx->dims[NGX_HTTP_KROUTE_DIM_ARM],
                            &ctx->arm, NGX_HTTP_KROUTE_DIM_MAX);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_rewrite(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    u_char *body, size_t len)
{
    u_char            *scratch;
    size_t             size, total;
    ngx_int_t          n, i;
    kr_str_t           seg[KR_REWRITE_SEGS], name;
    ngx_buf_t         *b;
    ngx_uint_t         inject;
    ngx_chain_t       *cl, **ll;
    ngx_list_part_t   *part;
    ngx_table_elt_t   *h;

    inject = ctx->format == NGX_HTTP_KROUTE_FORMAT_OPENAI
             && ctx->req.stream && !ctx->req.include_usage;

    name.data = ctx->model->name.data;
    name.len = ctx->model->name.len;

    if (!inject
        && ctx->model_requested.len == name.len
        && ngx_strncmp(ctx->model_requested.data, name.data, name.len) == 0)
    {
        /* the body goes upstream as the client sent it */
        return NGX_OK;
    }

    size = KR_REWRITE_SCRATCH(name.len);

    scratch = ngx_pnalloc(r->pool, size);
    if (scratch == NULL) {
        return NGX_ERROR;
    }

    n = kr_request_rewrite(&ctx->req, body, len, &name, inject, seg, scratch,
                           size);

    if (n <= 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "kroute: rewriting the request body failed");
        return NGX_ERROR;
    }

    ll = &r->request_body->bufs;
    total = 0;

    for (i = 0; i < n; i++) {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->pos = (u_char *) seg[i].data;
        b->last = b->pos + seg[i].len;
        b->start = b->pos;
        b->end = b->last;
        b->memory = 1;
        total += seg[i].len;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        *ll = cl;
        ll = &cl->next;
    }

    *ll = NULL;

    b->last_buf = 1;

    r->headers_in.content_length_n = total;

    if (!inject) {
        return NGX_OK;
    }

    ctx->injected = 1;

    /* the usage chunk is taken out of the stream: it must stay readable */

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if ((ngx_uint_t) i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("Accept-Encoding") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Accept-Encoding",
                               sizeof("Accept-Encoding") - 1) == 0)
        {
            ngx_str_set(&h[i].value, "identity");
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_set_upstream(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx)
{
    u_char  *p;
    size_t   len;

    len = ctx->provider->url.len + sizeof("/chat/completions") - 1;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->upstream.data = p;

    p = ngx_cpymem(p, ctx->provider->url.data, ctx->provider->url.len);

    if (ctx->provider->format == NGX_HTTP_KROUTE_FORMAT_ANTHROPIC) {
        p = ngx_cpymem(p, "/messages", sizeof("/messages") - 1);

    } else {
        p = ngx_cpymem(p, "/chat/completions",
                       sizeof("/chat/completions") - 1);
    }

    ctx->upstream.len = p - ctx->upstream.data;
    ctx->routed = 1;
    ctx->start = ngx_current_msec;

    return NGX_OK;
}


static ngx_http_kroute_provider_t *
ngx_http_kroute_default_provider(ngx_http_kroute_main_conf_t *kmcf,
    ngx_http_kroute_loc_conf_t *klcf)
{
    ngx_uint_t                   i;
    ngx_http_kroute_provider_t  *p;

    p = kmcf->providers.elts;

    for (i = 0; i < kmcf->providers.nelts; i++) {
        if (p[i].format == klcf->format) {
            return &p[i];
        }
    }

    return NULL;
}


/*
 * Prepares an error reply in the OpenAI error shape; it is sent when the
 * phase handler runs again.  Returns NGX_OK, or NGX_ERROR on allocation
 * failure.
 */

static ngx_int_t
ngx_http_kroute_fail(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx,
    ngx_uint_t status, const char *code, u_char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    p = ngx_pnalloc(r->pool, 512);
    if (p == NULL) {
        return NGX_ERROR;
    }

    va_start(args, fmt);
    ctx->route_reason.len = ngx_vslprintf(p, p + 512, (const char *) fmt,
                                          args) - p;
    va_end(args);

    ctx->route_reason.data = p;
    ctx->status = status;
    ctx->error_code = code;
    ctx->own_reply = 1;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "kroute: %V", &ctx->route_reason);

    return NGX_OK;
}


ngx_int_t
ngx_http_kroute_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, ngx_str_t *message)
{
    size_t        len;
    u_char       *p;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    len = sizeof("{\"error\":{\"message\":\"\",\"type\":"
                 "\"invalid_request_error\",\"param\":null,\"code\":\"\"}}\n")
          - 1 + message->len + ngx_escape_json(NULL, message->data,
                                               message->len)
          + ngx_strlen(code);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(b->last, "{\"error\":{\"message\":\"",
                   sizeof("{\"error\":{\"message\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, message->data, message->len);
    p = ngx_sprintf(p, "\",\"type\":\"invalid_request_error\","
                    "\"param\":null,\"code\":\"%s\"}}\n", code);

    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = sizeof("application/json") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
