
/*
 * Copyright (C) kroute authors
 */

/*
 * The kroute_metrics content handler: prints the shared zone's counters
 * in the Prometheus text exposition format.  The zone is copied under
 * its mutex and formatted outside it, so a scrape holds workers up only
 * for a memcpy.  Labels are the attribution dimensions; user ids never
 * become labels.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


#define NGX_HTTP_KROUTE_LABEL_MAX                                            \
    (NGX_HTTP_KROUTE_NDIMS * (2 * NGX_HTTP_KROUTE_DIM_MAX + 16) + 64)

/* providers whose health /metrics shows */
#define NGX_HTTP_KROUTE_HEALTH_MAX  64

/* lines printed per series: counters, tokens, two histograms */
#define NGX_HTTP_KROUTE_SERIES_LINES                                         \
    (10 + 2 * (NGX_HTTP_KROUTE_NBUCKETS + 3))


typedef struct {
    ngx_http_kroute_counters_t     c;
    u_char                        *labels;
    size_t                         labels_len;
} ngx_http_kroute_snapshot_t;


static ngx_int_t ngx_http_kroute_metrics_handler(ngx_http_request_t *r);
static u_char *ngx_http_kroute_labels(u_char *p, u_char *key, size_t len);
static u_char *ngx_http_kroute_provider_health(ngx_http_request_t *r,
    u_char *p, ngx_http_kroute_main_conf_t *kmcf);
static u_char *ngx_http_kroute_counter(u_char *p, const char *name,
    const char *help, ngx_http_kroute_snapshot_t *s, ngx_uint_t n,
    size_t field);
static u_char *ngx_http_kroute_seconds(u_char *p, uint64_t ms);
static u_char *ngx_http_kroute_histogram(u_char *p, const char *name,
    ngx_http_kroute_snapshot_t *s, ngx_uint_t n, ngx_uint_t ttft);


static const char  *ngx_http_kroute_dim_names[NGX_HTTP_KROUTE_NDIMS] = {
    "feature", "task", "model", "provider", "cohort", "agent", "arm",
    "status"
};


char *
ngx_http_kroute_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_kroute_metrics_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_kroute_metrics_handler(ngx_http_request_t *r)
{
    u_char                       *p, *lp;
    size_t                        size;
    uint64_t                      drops, rstat[6];
    ngx_int_t                     rc;
    ngx_buf_t                    *b;
    ngx_uint_t                    i, n, nseries;
    ngx_chain_t                   out;
    ngx_queue_t                  *q;
    ngx_http_kroute_shm_t        *shm;
    ngx_http_kroute_series_t     *s;
    ngx_http_kroute_snapshot_t   *snap;
    ngx_http_kroute_main_conf_t  *kmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    kmcf = ngx_http_get_module_main_conf(r, ngx_http_kroute_module);

    n = 0;
    drops = 0;
    ngx_memzero(rstat, sizeof(rstat));
    nseries = 0;
    snap = NULL;

    if (kmcf->shm_zone) {
        shm = kmcf->shm_zone->data;

        ngx_shmtx_lock(&shm->shpool->mutex);

        nseries = shm->sh->nseries;
        drops = shm->sh->drops;

        rstat[0] = shm->sh->redis_connected;
        rstat[1] = shm->sh->ndeltas + shm->sh->inflight_records
                   * (shm->sh->inflight != NULL);
        rstat[2] = shm->sh->redis_batches;
        rstat[3] = shm->sh->redis_failures;
        rstat[4] = shm->sh->redis_drops;
        rstat[5] = shm->sh->redis_duplicates;

        snap = ngx_palloc(r->pool, (nseries + 1)
                                   * sizeof(ngx_http_kroute_snapshot_t));
        lp = ngx_pnalloc(r->pool, (nseries + 1) * NGX_HTTP_KROUTE_LABEL_MAX);

        if (snap == NULL || lp == NULL) {
            ngx_shmtx_unlock(&shm->shpool->mutex);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        for (q = ngx_queue_head(&shm->sh->queue);
             q != ngx_queue_sentinel(&shm->sh->queue) && n < nseries;
             q = ngx_queue_next(q))
        {
            s = ngx_queue_data(q, ngx_http_kroute_series_t, queue);

            snap[n].c = s->total;
            snap[n].labels = lp;
            lp = ngx_http_kroute_labels(lp, s->data, s->keylen);
            snap[n].labels_len = lp - snap[n].labels;
            n++;
        }

        ngx_shmtx_unlock(&shm->shpool->mutex);
    }

    /* each line of a series: its labels and at most 128 bytes more */

    size = 8192 + 256 * NGX_HTTP_KROUTE_HEALTH_MAX;

    for (i = 0; i < n; i++) {
        size += NGX_HTTP_KROUTE_SERIES_LINES * (snap[i].labels_len + 128);
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    p = ngx_http_kroute_counter(p, "kroute_requests_total",
                                "Chat-completion requests metered by kroute.",
                                snap, n,
                                offsetof(ngx_http_kroute_counters_t,
                                         requests));

    p = ngx_http_kroute_counter(p, "kroute_errors_total",
                                "Requests answered with an error by the "
                                "provider or by kroute.",
                                snap, n,
                                offsetof(ngx_http_kroute_counters_t, errors));

    p = ngx_sprintf(p, "# HELP kroute_tokens_total Tokens as the provider "
                    "reports them (input and output totals; cached, "
                    "cache_write and reasoning are parts of them).\n"
                    "# TYPE kroute_tokens_total counter\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p,
                        "kroute_tokens_total{%*s,type=\"input\"} %uL\n"
                        "kroute_tokens_total{%*s,type=\"output\"} %uL\n"
                        "kroute_tokens_total{%*s,type=\"cached\"} %uL\n"
                        "kroute_tokens_total{%*s,type=\"cache_write\"} %uL\n"
                        "kroute_tokens_total{%*s,type=\"reasoning\"} %uL\n",
                        snap[i].labels_len, snap[i].labels, snap[i].c.input,
                        snap[i].labels_len, snap[i].labels, snap[i].c.output,
                        snap[i].labels_len, snap[i].labels, snap[i].c.cached,
                        snap[i].labels_len, snap[i].labels,
                        snap[i].c.cache_write,
                        snap[i].labels_len, snap[i].labels,
                        snap[i].c.reasoning);
    }

    p = ngx_sprintf(p, "# HELP kroute_cost_usd_total Cost at catalog "
                    "prices, in US dollars.\n"
                    "# TYPE kroute_cost_usd_total counter\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "kroute_cost_usd_total{%*s} %uL.%012uL\n",
                        snap[i].labels_len, snap[i].labels,
                        snap[i].c.cost_pusd / 1000000000000ULL,
                        snap[i].c.cost_pusd % 1000000000000ULL);
    }

    p = ngx_http_kroute_counter(p, "kroute_usage_estimated_total",
                                "Requests whose provider sent no usage, "
                                "counted from an estimate.",
                                snap, n,
                                offsetof(ngx_http_kroute_counters_t,
                                         estimated));

    p = ngx_http_kroute_counter(p, "kroute_requests_unparsed_total",
                                "Requests passed through without a readable "
                                "body.",
                                snap, n,
                                offsetof(ngx_http_kroute_counters_t,
                                         unparsed));

    p = ngx_http_kroute_histogram(p, "kroute_request_duration_seconds",
                                  snap, n, 0);
    p = ngx_http_kroute_histogram(p, "kroute_time_to_first_token_seconds",
                                  snap, n, 1);

    p = ngx_sprintf(p, "# HELP kroute_zone_series Counter series held in "
                    "the shared zone.\n"
                    "# TYPE kroute_zone_series gauge\n"
                    "kroute_zone_series %ui\n"
                    "# HELP kroute_zone_dropped_total Requests not counted "
                    "because the shared zone was full.\n"
                    "# TYPE kroute_zone_dropped_total counter\n"
                    "kroute_zone_dropped_total %uL\n",
                    nseries, drops);

    p = ngx_http_kroute_provider_health(r, p, kmcf);

    if (kmcf->redis) {
        p = ngx_sprintf(p, "# HELP kroute_redis_connected Whether the "
                        "flushing worker holds a Redis connection.\n"
                        "# TYPE kroute_redis_connected gauge\n"
                        "kroute_redis_connected %uL\n"
                        "# HELP kroute_redis_pending_deltas Counter deltas "
                        "waiting in the zone for Redis.\n"
                        "# TYPE kroute_redis_pending_deltas gauge\n"
                        "kroute_redis_pending_deltas %uL\n"
                        "# HELP kroute_redis_batches_total Batches Redis "
                        "acknowledged.\n"
                        "# TYPE kroute_redis_batches_total counter\n"
                        "kroute_redis_batches_total %uL\n"
                        "# HELP kroute_redis_failures_total Failed connects, "
                        "timeouts and refused batches.\n"
                        "# TYPE kroute_redis_failures_total counter\n"
                        "kroute_redis_failures_total %uL\n"
                        "# HELP kroute_redis_dropped_total Deltas dropped "
                        "because the zone was full.\n"
                        "# TYPE kroute_redis_dropped_total counter\n"
                        "kroute_redis_dropped_total %uL\n"
                        "# HELP kroute_redis_duplicate_batches_total Batches "
                        "sent again that Redis had already applied.\n"
                        "# TYPE kroute_redis_duplicate_batches_total counter\n"
                        "kroute_redis_duplicate_batches_total %uL\n",
                        rstat[0], rstat[1], rstat[2], rstat[3], rstat[4],
                        rstat[5]);
    }

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static u_char *
ngx_http_kroute_labels(u_char *p, u_char *key, size_t len)
{
    u_char      *last;
    ngx_uint_t   i;

    last = key + len;

    for (i = 0; i < NGX_HTTP_KROUTE_NDIMS; i++) {

        if (i) {
            *p++ = ',';
        }

        p = ngx_sprintf(p, "%s=\"", ngx_http_kroute_dim_names[i]);

        while (key < last && *key != 0x1f) {
            if (*key == '\\' || *key == '"') {
                *p++ = '\\';
            }

            *p++ = *key++;
        }

        *p++ = '"';

        if (key < last) {
            key++;
        }
    }

    return p;
}


/* the cool-down state of each provider of this configuration */

static u_char *
ngx_http_kroute_provider_health(ngx_http_request_t *r, u_char *p,
    ngx_http_kroute_main_conf_t *kmcf)
{
    ngx_uint_t                      i, n;
    kr_health_t                     h[NGX_HTTP_KROUTE_HEALTH_MAX];
    ngx_http_kroute_shm_t          *shm;
    ngx_http_kroute_provider_t     *pr;
    ngx_http_kroute_route_state_t  *st;

    st = kmcf->route_state;

    if (st == NULL || kmcf->shm_zone == NULL) {
        return p;
    }

    shm = kmcf->shm_zone->data;
    n = ngx_min(st->nproviders, NGX_HTTP_KROUTE_HEALTH_MAX);

    ngx_shmtx_lock(&shm->shpool->mutex);
    ngx_memcpy(h, st->health, n * sizeof(kr_health_t));
    ngx_shmtx_unlock(&shm->shpool->mutex);

    pr = kmcf->providers.elts;

    p = ngx_sprintf(p, "# HELP kroute_provider_cooling Whether routing "
                    "skips the provider after a run of failures.\n"
                    "# TYPE kroute_provider_cooling gauge\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "kroute_provider_cooling{provider=\"%V\"} %d\n",
                        &pr[i].name, !kr_health_ok(&h[i], ngx_current_msec));
    }

    p = ngx_sprintf(p, "# HELP kroute_provider_cooldowns_total Cool-downs "
                    "a provider was put in.\n"
                    "# TYPE kroute_provider_cooldowns_total counter\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "kroute_provider_cooldowns_total{provider=\"%V\"} "
                        "%uD\n", &pr[i].name, h[i].cooldowns);
    }

    return p;
}


/* one counter family: a series per snapshot, the value at "field" */

static u_char *
ngx_http_kroute_counter(u_char *p, const char *name, const char *help,
    ngx_http_kroute_snapshot_t *s, ngx_uint_t n, size_t field)
{
    ngx_uint_t  i;

    p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s counter\n", name, help,
                    name);

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "%s{%*s} %uL\n", name, s[i].labels_len,
                        s[i].labels,
                        *(uint64_t *) ((u_char *) &s[i].c + field));
    }

    return p;
}


static u_char *
ngx_http_kroute_seconds(u_char *p, uint64_t ms)
{
    return ngx_sprintf(p, "%uL.%03uL", ms / 1000, ms % 1000);
}


static u_char *
ngx_http_kroute_histogram(u_char *p, const char *name,
    ngx_http_kroute_snapshot_t *s, ngx_uint_t n, ngx_uint_t ttft)
{
    uint64_t    *bucket, count, sum;
    ngx_uint_t   i, j;

    p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s histogram\n", name,
                    ttft ? "Time from sending the request upstream to the "
                           "first response byte."
                         : "Time from sending the request upstream to the "
                           "last response byte.",
                    name);

    for (i = 0; i < n; i++) {

        if (ttft) {
            bucket = s[i].c.ttft_bucket;
            count = s[i].c.ttft_count;
            sum = s[i].c.ttft_ms;

        } else {
            bucket = s[i].c.latency_bucket;
            count = s[i].c.latency_count;
            sum = s[i].c.latency_ms;
        }

        for (j = 0; j < NGX_HTTP_KROUTE_NBUCKETS; j++) {
            p = ngx_sprintf(p, "%s_bucket{%*s,le=\"", name,
                            s[i].labels_len, s[i].labels);
            p = ngx_http_kroute_seconds(p, ngx_http_kroute_buckets[j]);
            p = ngx_sprintf(p, "\"} %uL\n", bucket[j]);
        }

        p = ngx_sprintf(p, "%s_bucket{%*s,le=\"+Inf\"} %uL\n", name,
                        s[i].labels_len, s[i].labels, count);

        p = ngx_sprintf(p, "%s_sum{%*s} ", name, s[i].labels_len,
                        s[i].labels);
        p = ngx_http_kroute_seconds(p, sum);

        p = ngx_sprintf(p, "\n%s_count{%*s} %uL\n", name,
                        s[i].labels_len, s[i].labels, count);
    }

    return p;
}
