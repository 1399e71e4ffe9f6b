
/*
 * Copyright (C) kroute authors
 */

/*
 * The $kroute_* variables: the routing result for proxy_pass and
 * proxy_set_header, and the per-request trace (ids, attribution, model,
 * tokens, cost, timings) for access logs.  Usage and cost variables are
 * known once the response is over, in the log phase.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


#define NGX_HTTP_KROUTE_VAR_UPSTREAM        0
#define NGX_HTTP_KROUTE_VAR_AUTHORIZATION   1
#define NGX_HTTP_KROUTE_VAR_API_KEY         2
#define NGX_HTTP_KROUTE_VAR_REQUEST_ID      3
#define NGX_HTTP_KROUTE_VAR_TASK            4
#define NGX_HTTP_KROUTE_VAR_MODEL_REQUESTED 5
#define NGX_HTTP_KROUTE_VAR_MODEL           6
#define NGX_HTTP_KROUTE_VAR_MODEL_REPORTED  7
#define NGX_HTTP_KROUTE_VAR_PROVIDER        8
#define NGX_HTTP_KROUTE_VAR_FEATURE         9
#define NGX_HTTP_KROUTE_VAR_USER            10
#define NGX_HTTP_KROUTE_VAR_COHORT          11
#define NGX_HTTP_KROUTE_VAR_AGENT           12
#define NGX_HTTP_KROUTE_VAR_ROUTE_REASON    13
#define NGX_HTTP_KROUTE_VAR_PARSE           14
#define NGX_HTTP_KROUTE_VAR_UPSTREAM_HOST   15
#define NGX_HTTP_KROUTE_VAR_ARM             16

#define NGX_HTTP_KROUTE_VAR_INPUT           20
#define NGX_HTTP_KROUTE_VAR_OUTPUT          21
#define NGX_HTTP_KROUTE_VAR_CACHED          22
#define NGX_HTTP_KROUTE_VAR_CACHE_WRITE     23
#define NGX_HTTP_KROUTE_VAR_REASONING       24
#define NGX_HTTP_KROUTE_VAR_USAGE_SOURCE    25
#define NGX_HTTP_KROUTE_VAR_COST_USD        26
#define NGX_HTTP_KROUTE_VAR_COST_MICRO_USD  27
#define NGX_HTTP_KROUTE_VAR_LATENCY         28
#define NGX_HTTP_KROUTE_VAR_TTFT            29
#define NGX_HTTP_KROUTE_VAR_STATUS          30
#define NGX_HTTP_KROUTE_VAR_ERROR_CLASS     31
#define NGX_HTTP_KROUTE_VAR_FINISH_REASON   32

/* variables at or above this index need the finished response */
#define NGX_HTTP_KROUTE_VAR_FINAL           20


static ngx_int_t ngx_http_kroute_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_kroute_set_str(ngx_http_variable_value_t *v,
    u_char *data, size_t len);
static ngx_int_t ngx_http_kroute_set_num(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, int64_t n);


static ngx_http_variable_t  ngx_http_kroute_vars[] = {

    { ngx_string("kroute_upstream"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_UPSTREAM, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_upstream_host"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_UPSTREAM_HOST, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_authorization"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_AUTHORIZATION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_api_key"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_API_KEY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_request_id"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_REQUEST_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_task"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_TASK, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_model_requested"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_MODEL_REQUESTED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_model"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_model_reported"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_MODEL_REPORTED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_provider"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_PROVIDER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_feature"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_FEATURE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_user"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_USER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_cohort"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_COHORT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_agent"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_AGENT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_route_reason"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_ROUTE_REASON, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_ab_arm"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_ARM, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_parse"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_PARSE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_input_tokens"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_INPUT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_output_tokens"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_OUTPUT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_cached_tokens"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_CACHED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_cache_write_tokens"), NULL,
      ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_CACHE_WRITE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_reasoning_tokens"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_REASONING, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_usage_source"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_USAGE_SOURCE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_cost_usd"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_COST_USD, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_cost_micro_usd"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_COST_MICRO_USD, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_latency_ms"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_LATENCY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_ttft_ms"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_TTFT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_status"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_STATUS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_error_class"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_ERROR_CLASS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("kroute_finish_reason"), NULL, ngx_http_kroute_variable,
      NGX_HTTP_KROUTE_VAR_FINISH_REASON, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_kroute_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_kroute_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                 *p;
    uint64_t                pusd;
    const char             *s;
    ngx_str_t              *name;
    kr_usage_t             *u;
    ngx_http_kroute_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_kroute_module);

    if (ctx == NULL || !ctx->done) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data >= NGX_HTTP_KROUTE_VAR_FINAL) {
        if (!ctx->finalized) {
            /* the response is not over yet */
            v->not_found = 1;
            return NGX_OK;
        }
    }

    u = &ctx->usage;

    switch (data) {

    case NGX_HTTP_KROUTE_VAR_UPSTREAM:
        return ngx_http_kroute_set_str(v, ctx->upstream.data,
                                       ctx->upstream.len);

    case NGX_HTTP_KROUTE_VAR_UPSTREAM_HOST:
        if (ctx->provider == NULL) {
            break;
        }

        return ngx_http_kroute_set_str(v, ctx->provider->host.data,
                                       ctx->provider->host.len);

    case NGX_HTTP_KROUTE_VAR_AUTHORIZATION:
        if (ctx->provider == NULL) {
            break;
        }

        return ngx_http_kroute_set_str(v, ctx->provider->authorization.data,
                                       ctx->provider->authorization.len);

    case NGX_HTTP_KROUTE_VAR_API_KEY:
        if (ctx->provider == NULL) {
            break;
        }

        return ngx_http_kroute_set_str(v, ctx->provider->key.data,
                                       ctx->provider->key.len);

    case NGX_HTTP_KROUTE_VAR_REQUEST_ID:
        return ngx_http_kroute_set_str(v, ctx->request_id,
                                       sizeof(ctx->request_id));

    case NGX_HTTP_KROUTE_VAR_TASK:
        if (ctx->task >= KR_TASK_N) {
            break;
        }

        name = ngx_http_kroute_task_label(r, ctx->task);
        return ngx_http_kroute_set_str(v, name->data, name->len);

    case NGX_HTTP_KROUTE_VAR_MODEL_REQUESTED:
        return ngx_http_kroute_set_str(v, ctx->model_requested.data,
                                       ctx->model_requested.len);

    case NGX_HTTP_KROUTE_VAR_MODEL:
        if (ctx->model == NULL) {
            break;
        }

        return ngx_http_kroute_set_str(v, ctx->model->name.data,
                                       ctx->model->name.len);

    case NGX_HTTP_KROUTE_VAR_MODEL_REPORTED:
        return ngx_http_kroute_set_str(v, (u_char *) u->model,
                                       ngx_strlen(u->model));

    case NGX_HTTP_KROUTE_VAR_PROVIDER:
        if (ctx->provider == NULL) {
            break;
        }

        return ngx_http_kroute_set_str(v, ctx->provider->name.data,
                                       ctx->provider->name.len);

    case NGX_HTTP_KROUTE_VAR_FEATURE:
        return ngx_http_kroute_set_str(v,
                                 ctx->dims[NGX_HTTP_KROUTE_DIM_FEATURE].data,
                                 ctx->dims[NGX_HTTP_KROUTE_DIM_FEATURE].len);

    case NGX_HTTP_KROUTE_VAR_USER:
        return ngx_http_kroute_set_str(v, ctx->user.data, ctx->user.len);

    case NGX_HTTP_KROUTE_VAR_COHORT:
        return ngx_http_kroute_set_str(v,
                                 ctx->dims[NGX_HTTP_KROUTE_DIM_COHORT].data,
                                 ctx->dims[NGX_HTTP_KROUTE_DIM_COHORT].len);

    case NGX_HTTP_KROUTE_VAR_AGENT:
        return ngx_http_kroute_set_str(v,
                                 ctx->dims[NGX_HTTP_KROUTE_DIM_AGENT].data,
                                 ctx->dims[NGX_HTTP_KROUTE_DIM_AGENT].len);

    case NGX_HTTP_KROUTE_VAR_ROUTE_REASON:
        return ngx_http_kroute_set_str(v, ctx->route_reason.data,
                                       ctx->route_reason.len);

    case NGX_HTTP_KROUTE_VAR_ARM:
        return ngx_http_kroute_set_str(v, ctx->arm.data, ctx->arm.len);

    case NGX_HTTP_KROUTE_VAR_PARSE:
        if (ctx->unparsed) {
            return ngx_http_kroute_set_str(v, (u_char *) "unparsed", 8);
        }

        return ngx_http_kroute_set_str(v, (u_char *) "ok", 2);

    case NGX_HTTP_KROUTE_VAR_INPUT:
        return ngx_http_kroute_set_num(r, v, u->input);

    case NGX_HTTP_KROUTE_VAR_OUTPUT:
        return ngx_http_kroute_set_num(r, v, u->output);

    case NGX_HTTP_KROUTE_VAR_CACHED:
        return ngx_http_kroute_set_num(r, v, u->cached);

    case NGX_HTTP_KROUTE_VAR_CACHE_WRITE:
        return ngx_http_kroute_set_num(r, v, u->cache_write);

    case NGX_HTTP_KROUTE_VAR_REASONING:
        return ngx_http_kroute_set_num(r, v, u->reasoning);

    case NGX_HTTP_KROUTE_VAR_USAGE_SOURCE:
        s = ctx->usage_source == NGX_HTTP_KROUTE_USAGE_PROVIDER ? "provider"
            : ctx->usage_source == NGX_HTTP_KROUTE_USAGE_ESTIMATE
              ? "estimate" : "none";
        return ngx_http_kroute_set_str(v, (u_char *) s, ngx_strlen(s));

    case NGX_HTTP_KROUTE_VAR_COST_USD:
        p = ngx_pnalloc(r->pool, KR_USD_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        return ngx_http_kroute_set_str(v, p, kr_usd_format(p,
                                                           ctx->cost_pusd));

    case NGX_HTTP_KROUTE_VAR_COST_MICRO_USD:

        /* micro-USD with the fraction kept: pico-USD / 10^6 */

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 8);
        if (p == NULL) {
            return NGX_ERROR;
        }

        pusd = ctx->cost_pusd;

        v->data = p;
        p = ngx_sprintf(p, "%uL", pusd / 1000000);

        if (pusd % 1000000) {
            p = ngx_sprintf(p, ".%06uL", pusd % 1000000);

            while (p[-1] == '0') {
                p--;
            }
        }

        v->len = p - v->data;
        v->valid = 1;
        v->no_cacheable = 0;
        v->not_found = 0;
        return NGX_OK;

    case NGX_HTTP_KROUTE_VAR_LATENCY:
        if (ctx->start == 0) {
            break;
        }

        return ngx_http_kroute_set_num(r, v, ctx->last_byte - ctx->start);

    case NGX_HTTP_KROUTE_VAR_TTFT:
        if (ctx->start == 0 || ctx->first_byte == 0) {
            break;
        }

        return ngx_http_kroute_set_num(r, v, ctx->first_byte - ctx->start);

    case NGX_HTTP_KROUTE_VAR_STATUS:
        return ngx_http_kroute_set_num(r, v, ctx->status);

    case NGX_HTTP_KROUTE_VAR_ERROR_CLASS:
        if (ctx->own_reply) {
            return ngx_http_kroute_set_str(v, (u_char *) ctx->error_code,
                                           ngx_strlen(ctx->error_code));
        }

        s = kr_usage_error_class_name(u->error_class);
        return ngx_http_kroute_set_str(v, (u_char *) s, ngx_strlen(s));

    case NGX_HTTP_KROUTE_VAR_FINISH_REASON:
        return ngx_http_kroute_set_str(v, (u_char *) u->finish_reason,
                                       ngx_strlen(u->finish_reason));
    }

    v->not_found = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_set_str(ngx_http_variable_value_t *v, u_char *data,
    size_t len)
{
    v->data = data;
    v->len = len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_kroute_set_num(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    int64_t n)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_kroute_set_str(v, p, ngx_sprintf(p, "%L", n) - p);
}
