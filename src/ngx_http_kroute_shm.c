
/*
 * Copyright (C) kroute authors
 */

/*
 * Counters shared by all workers.  Each series is one combination of
 * attribution dimensions (feature, task, model, provider, cohort, agent,
 * status class) and holds requests, tokens by type, cost and latency
 * histograms.  Series live in a red-black tree in a shared memory zone
 * that survives `nginx -s reload`; when the zone is full new series are
 * dropped and counted, with one log line a minute.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


static ngx_int_t ngx_http_kroute_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_kroute_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_kroute_series_t *ngx_http_kroute_series_get(
    ngx_http_kroute_shm_t *shm, ngx_str_t *key, uint32_t hash,
    ngx_log_t *log);


ngx_msec_t  ngx_http_kroute_buckets[NGX_HTTP_KROUTE_NBUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 20000, 30000, 60000, 120000
};


char *
ngx_http_kroute_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    u_char                 *p;
    ssize_t                 size;
    ngx_str_t              *value, name, s;
    ngx_http_kroute_shm_t  *shm;

    if (kmcf->shm_zone != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    p = (u_char *) ngx_strchr(value[1].data, ':');
    if (p == NULL || p == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid kroute_zone \"%V\", expected name:size",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - value[1].data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid kroute_zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "kroute_zone \"%V\" is too small", &value[1]);
        return NGX_CONF_ERROR;
    }

    shm = ngx_pcalloc(cf->pool, sizeof(ngx_http_kroute_shm_t));
    if (shm == NULL) {
        return NGX_CONF_ERROR;
    }

    shm->kmcf = kmcf;

    kmcf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_kroute_module);
    if (kmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (kmcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "kroute_zone \"%V\" is already used", &name);
        return NGX_CONF_ERROR;
    }

    kmcf->shm_zone->init = ngx_http_kroute_init_zone;
    kmcf->shm_zone->data = shm;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_kroute_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_kroute_shm_t  *oshm = data;

    size_t                  len;
    ngx_http_kroute_shm_t  *shm;

    shm = shm_zone->data;

    if (oshm) {
        shm->sh = oshm->sh;
        shm->shpool = oshm->shpool;
        return ngx_http_kroute_route_init_zone(shm);
    }

    shm->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm->sh = shm->shpool->data;
        return ngx_http_kroute_route_init_zone(shm);
    }

    shm->sh = ngx_slab_calloc(shm->shpool, sizeof(ngx_http_kroute_shctx_t));
    if (shm->sh == NULL) {
        return NGX_ERROR;
    }

    shm->shpool->data = shm->sh;

    ngx_rbtree_init(&shm->sh->rbtree, &shm->sh->sentinel,
                    ngx_http_kroute_rbtree_insert_value);

    ngx_queue_init(&shm->sh->queue);

    if (ngx_http_kroute_redis_init_zone(shm, shm_zone->shm.size) != NGX_OK) {
        return NGX_ERROR;
    }

    len = sizeof(" in kroute zone \"\"") + shm_zone->shm.name.len;

    shm->shpool->log_ctx = ngx_slab_alloc(shm->shpool, len);
    if (shm->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(shm->shpool->log_ctx, " in kroute zone \"%V\"%Z",
                &shm_zone->shm.name);

    shm->shpool->log_nomem = 0;

    return ngx_http_kroute_route_init_zone(shm);
}


static void
ngx_http_kroute_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_http_kroute_series_t   *s, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            s = (ngx_http_kroute_series_t *) node;
            t = (ngx_http_kroute_series_t *) temp;

            p = (ngx_memn2cmp(s->data, t->data, s->keylen, t->keylen) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_http_kroute_series_t *
ngx_http_kroute_series_get(ngx_http_kroute_shm_t *shm, ngx_str_t *key,
    uint32_t hash, ngx_log_t *log)
{
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_http_kroute_series_t  *s;

    node = shm->sh->rbtree.root;
    sentinel = shm->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        s = (ngx_http_kroute_series_t *) node;

        rc = ngx_memn2cmp(key->data, s->data, key->len, s->keylen);

        if (rc == 0) {
            return s;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    s = ngx_slab_calloc_locked(shm->shpool,
                               offsetof(ngx_http_kroute_series_t, data)
                               + key->len);

    if (s == NULL) {
        shm->sh->drops++;

        if (shm->sh->drop_logged == 0
            || ngx_current_msec - shm->sh->drop_logged > 60000)
        {
            shm->sh->drop_logged = ngx_current_msec;
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "kroute zone is full, %uL requests not counted "
                          "so far; enlarge kroute_zone", shm->sh->drops);
        }

        return NULL;
    }

    s->keylen = (u_short) key->len;
    ngx_memcpy(s->data, key->data, key->len);

    s->node.key = hash;

    ngx_rbtree_insert(&shm->sh->rbtree, &s->node);
    ngx_queue_insert_tail(&shm->sh->queue, &s->queue);
    shm->sh->nseries++;

    return s;
}


void
ngx_http_kroute_shm_account(ngx_http_request_t *r, ngx_http_kroute_ctx_t *ctx)
{
    u_char                       *p;
    u_char                        buf[NGX_HTTP_KROUTE_NDIMS
                                      * (NGX_HTTP_KROUTE_DIM_MAX + 1)];
    uint32_t                      hash;
    uint64_t                      value[NGX_HTTP_KROUTE_NMETRICS];
    ngx_msec_t                    latency, ttft;
    ngx_uint_t                    i;
    ngx_str_t                     key;
    ngx_http_kroute_shm_t        *shm;
    ngx_http_kroute_series_t     *s;
    ngx_http_kroute_counters_t   *c;
    ngx_http_kroute_main_conf_t  *kmcf;

    kmcf = ngx_http_get_module_main_conf(r, ngx_http_kroute_module);

    if (kmcf->shm_zone == NULL) {
        return;
    }

    shm = kmcf->shm_zone->data;

    /* dimension values are sanitised: they never hold a 0x1f */

    p = buf;

    for (i = 0; i < NGX_HTTP_KROUTE_NDIMS; i++) {
        if (i) {
            *p++ = 0x1f;
        }

        p = ngx_cpymem(p, ctx->dims[i].data,
                       ngx_min(ctx->dims[i].len, NGX_HTTP_KROUTE_DIM_MAX));
    }

    key.data = buf;
    key.len = p - buf;

    hash = ngx_crc32_short(key.data, key.len);

    latency = ctx->last_byte >= ctx->start ? ctx->last_byte - ctx->start : 0;
    ttft = ctx->first_byte >= ctx->start ? ctx->first_byte - ctx->start : 0;

    ngx_memzero(value, sizeof(value));

    value[NGX_HTTP_KROUTE_M_REQ] = 1;
    value[NGX_HTTP_KROUTE_M_ERR] = (ctx->status >= 400
                                    || ctx->usage.error_class
                                       != KR_ERROR_NONE);
    value[NGX_HTTP_KROUTE_M_UNPARSED] = ctx->unparsed;
    value[NGX_HTTP_KROUTE_M_ESTIMATED] = (ctx->usage_source
                                          == NGX_HTTP_KROUTE_USAGE_ESTIMATE);

    if (ctx->usage_source != NGX_HTTP_KROUTE_USAGE_NONE) {
        value[NGX_HTTP_KROUTE_M_IN] = ctx->usage.input;
        value[NGX_HTTP_KROUTE_M_OUT] = ctx->usage.output;
        value[NGX_HTTP_KROUTE_M_CACHED] = ctx->usage.cached;
        value[NGX_HTTP_KROUTE_M_CW] = ctx->usage.cache_write;
        value[NGX_HTTP_KROUTE_M_REASON] = ctx->usage.reasoning;
        value[NGX_HTTP_KROUTE_M_COST] = ctx->cost_pusd;
    }

    if (ctx->start) {
        value[NGX_HTTP_KROUTE_M_LAT] = latency;

        if (ctx->first_byte) {
            value[NGX_HTTP_KROUTE_M_TTFT] = ttft;
        }
    }

    ngx_shmtx_lock(&shm->shpool->mutex);

    ngx_http_kroute_route_learn(r, ctx, shm);

    if (kmcf->redis) {
        ngx_http_kroute_redis_account(r, ctx, shm, &key, value);
    }

    s = ngx_http_kroute_series_get(shm, &key, hash, r->connection->log);

    if (s == NULL) {
        ngx_shmtx_unlock(&shm->shpool->mutex);
        return;
    }

    c = &s->total;

    c->requests++;
    c->errors += value[NGX_HTTP_KROUTE_M_ERR];
    c->unparsed += value[NGX_HTTP_KROUTE_M_UNPARSED];
    c->estimated += value[NGX_HTTP_KROUTE_M_ESTIMATED];
    c->input += value[NGX_HTTP_KROUTE_M_IN];
    c->output += value[NGX_HTTP_KROUTE_M_OUT];
    c->cached += value[NGX_HTTP_KROUTE_M_CACHED];
    c->cache_write += value[NGX_HTTP_KROUTE_M_CW];
    c->reasoning += value[NGX_HTTP_KROUTE_M_REASON];
    c->cost_pusd += value[NGX_HTTP_KROUTE_M_COST];

    if (ctx->start) {
        c->latency_ms += latency;
        c->latency_count++;

        for (i = 0; i < NGX_HTTP_KROUTE_NBUCKETS; i++) {
            if (latency <= ngx_http_kroute_buckets[i]) {
                c->latency_bucket[i]++;
            }
        }

        if (ctx->first_byte) {
            c->ttft_ms += ttft;
            c->ttft_count++;

            for (i = 0; i < NGX_HTTP_KROUTE_NBUCKETS; i++) {
                if (ttft <= ngx_http_kroute_buckets[i]) {
                    c->ttft_bucket[i]++;
                }
            }
        }
    }

    ngx_shmtx_unlock(&shm->shpool->mutex);
}
