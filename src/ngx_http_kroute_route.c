
/*
 * Copyright (C) kroute authors
 */

/*
 * What routing needs beyond the catalog: A/B splits between models
 * (kroute_split), the provider cool-down policy (kroute_cooldown), and
 * the state both keep in the shared zone: per provider health and, per
 * model and task, the output length metered so far, from which routing
 * learns what a model's answer to a task will cost.  The pure decisions
 * are in kr_route.c.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


static uint32_t ngx_http_kroute_catalog_signature(
    ngx_http_kroute_main_conf_t *kmcf);


/*
 * kroute_split name [task=T] [feature=F] model:weight ...;
 * "routed" as a model keeps the usual cheapest choice (a control arm).
 */

char *
ngx_http_kroute_split(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    u_char                   *colon;
    ngx_int_t                 w;
    ngx_str_t                *value, name;
    ngx_uint_t                i;
    kr_route_split_t         *split;
    ngx_http_kroute_model_t  *m;

    value = cf->args->elts;

    if (kmcf->splits.elts == NULL
        && ngx_array_init(&kmcf->splits, cf->pool, 2,
                          sizeof(kr_route_split_t))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    split = ngx_array_push(&kmcf->splits);
    if (split == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(split, sizeof(kr_route_split_t));

    split->name.data = value[1].data;
    split->name.len = value[1].len;
    split->task = -1;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "task=", 5) == 0) {
            split->task = kr_task_index((const char *) value[i].data + 5,
                                        value[i].len - 5);
            if (split->task < 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "feature=", 8) == 0) {
            if (value[i].len == 8) {
                goto invalid;
            }

            split->feature = kr_route_hash(value[i].data + 8,
                                           value[i].len - 8);
            continue;
        }

        colon = ngx_strlchr(value[i].data, value[i].data + value[i].len,
                            ':');
        if (colon == NULL || split->n_arms == KR_ROUTE_ARMS_MAX) {
            goto invalid;
        }

        w = ngx_atoi(colon + 1, value[i].data + value[i].len - colon - 1);
        if (w <= 0 || w > 1000000) {
            goto invalid;
        }

        name.data = value[i].data;
        name.len = colon - value[i].data;

        if (name.len == 6 && ngx_strncmp(name.data, "routed", 6) == 0) {
            split->arms[split->n_arms].model = KR_ROUTE_ARM_ROUTED;

        } else {
            m = ngx_http_kroute_find_model(kmcf, name.data, name.len);
            if (m == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "kroute_split arm \"%V\" is not a "
                                   "catalog model", &value[i]);
                return NGX_CONF_ERROR;
            }

            split->arms[split->n_arms].model = m->index;
        }

        split->arms[split->n_arms].weight = w;
        split->n_arms++;
    }

    if (split->n_arms < 2) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "kroute_split \"%V\" needs at least two "
                           "model:weight arms", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid kroute_split parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


/* kroute_cooldown [failures=N] [window=T] [time=T]; */

char *
ngx_http_kroute_cooldown(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_msec_t   t;
    ngx_uint_t   i;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "failures=", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n < 1 || n > 1000) {
                goto invalid;
            }

            kmcf->health.failures = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "window=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            t = ngx_parse_time(&s, 0);
            if (t == (ngx_msec_t) NGX_ERROR || t == 0) {
                goto invalid;
            }

            kmcf->health.window_ms = t;
            continue;
        }

        if (ngx_strncmp(value[i].data, "time=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            t = ngx_parse_time(&s, 0);
            if (t == (ngx_msec_t) NGX_ERROR) {
                goto invalid;
            }

            kmcf->health.cooldown_ms = t;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid kroute_cooldown parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/* the catalog as kr_route_pick() reads it, built once per configuration */

ngx_int_t
ngx_http_kroute_route_init_conf(ngx_conf_t *cf,
    ngx_http_kroute_main_conf_t *kmcf)
{
    ngx_uint_t                   i, j;
    kr_route_model_t            *rm;
    ngx_http_kroute_model_t     *m;
    ngx_http_kroute_provider_t  *p;

    if (kmcf->health.window_ms == 0) {
        kr_health_conf_init(&kmcf->health);
    }

    if (kmcf->splits.elts == NULL
        && ngx_array_init(&kmcf->splits, cf->pool, 1,
                          sizeof(kr_route_split_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    rm = ngx_pcalloc(cf->pool,
                     (kmcf->models.nelts + 1) * sizeof(kr_route_model_t));
    kmcf->provider_names = ngx_pcalloc(cf->pool, (kmcf->providers.nelts + 1)
                                                 * sizeof(kr_str_t));
    if (rm == NULL || kmcf->provider_names == NULL) {
        return NGX_ERROR;
    }

    p = kmcf->providers.elts;

    for (i = 0; i < kmcf->providers.nelts; i++) {
        kmcf->provider_names[i].data = p[i].name.data;
        kmcf->provider_names[i].len = p[i].name.len;
    }

    m = kmcf->models.elts;

    for (i = 0; i < kmcf->models.nelts; i++) {
        rm[i].name.data = m[i].name.data;
        rm[i].name.len = m[i].name.len;
        rm[i].price = m[i].price;
        rm[i].provider = m[i].provider->index;
        rm[i].format = m[i].provider->format;
        rm[i].output_tokens = m[i].output_tokens;

        for (j = 0; j < KR_TASK_N; j++) {
            rm[i].quality[j] = (int) m[i].quality[j];
        }
    }

    kmcf->route_models = rm;

    return NGX_OK;
}


static uint32_t
ngx_http_kroute_catalog_signature(ngx_http_kroute_main_conf_t *kmcf)
{
    uint32_t                     crc;
    ngx_uint_t                   i;
    ngx_http_kroute_model_t     *m;
    ngx_http_kroute_provider_t  *p;

    ngx_crc32_init(crc);

    p = kmcf->providers.elts;

    for (i = 0; i < kmcf->providers.nelts; i++) {
        ngx_crc32_update(&crc, p[i].name.data, p[i].name.len);
        ngx_crc32_update(&crc, (u_char *) "\n", 1);
    }

    m = kmcf->models.elts;

    for (i = 0; i < kmcf->models.nelts; i++) {
        ngx_crc32_update(&crc, m[i].name.data, m[i].name.len);
        ngx_crc32_update(&crc, (u_char *) "\n", 1);
    }

    ngx_crc32_final(crc);

    return crc;
}


/*
 * Finds or makes the routing state of this catalog in the zone.  A
 * reload with the same providers and models keeps health and learned
 * output; another catalog gets its own state, and the old one stays for
 * the old workers still using it.
 */

ngx_int_t
ngx_http_kroute_route_init_zone(ngx_http_kroute_shm_t *shm)
{
    uint32_t                        sig;
    ngx_http_kroute_route_state_t  *st;
    ngx_http_kroute_main_conf_t    *kmcf;

    kmcf = shm->kmcf;

    sig = ngx_http_kroute_catalog_signature(kmcf);

    ngx_shmtx_lock(&shm->shpool->mutex);

    for (st = shm->sh->route_states; st; st = st->next) {
        if (st->signature == sig
            && st->nmodels == kmcf->models.nelts
            && st->nproviders == kmcf->providers.nelts)
        {
            goto found;
        }
    }

    st = ngx_slab_calloc_locked(shm->shpool,
                                sizeof(ngx_http_kroute_route_state_t));
    if (st == NULL) {
        goto failed;
    }

    st->signature = sig;
    st->nmodels = kmcf->models.nelts;
    st->nproviders = kmcf->providers.nelts;

    st->health = ngx_slab_calloc_locked(shm->shpool,
                                        (st->nproviders + 1)
                                        * sizeof(kr_health_t));
    st->stats = ngx_slab_calloc_locked(shm->shpool,
                                       (st->nmodels * KR_TASK_N + 1)
                                       * sizeof(kr_route_stats_t));

    if (st->health == NULL || st->stats == NULL) {
        goto failed;
    }

    st->next = shm->sh->route_states;
    shm->sh->route_states = st;

found:

    ngx_shmtx_unlock(&shm->shpool->mutex);

    kmcf->route_state = st;

    return NGX_OK;

failed:

    ngx_shmtx_unlock(&shm->shpool->mutex);

    ngx_log_error(NGX_LOG_EMERG, ngx_cycle->log, 0,
                  "kroute zone is too small for the routing state");

    return NGX_ERROR;
}


/*
 * After a response: the provider's health and, for a complete answer
 * with provider usage, the output length of the model on the task.
 */

void
ngx_http_kroute_route_learn(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, ngx_http_kroute_shm_t *shm)
{
    ngx_http_kroute_route_state_t  *st;
    ngx_http_kroute_main_conf_t    *kmcf;

    kmcf = ngx_http_get_module_main_conf(r, ngx_http_kroute_module);

    st = kmcf->route_state;

    if (st == NULL || ctx->provider == NULL || ctx->own_reply) {
        return;
    }

    /* called with the zone mutex held */

    kr_health_record(&st->health[ctx->provider->index], (int) ctx->status,
                     ctx->usage.error_class, ngx_current_msec, &kmcf->health);

    if (ctx->model == NULL
        || ctx->task >= KR_TASK_N
        || ctx->usage_source != NGX_HTTP_KROUTE_USAGE_PROVIDER
        || ctx->status >= NGX_HTTP_SPECIAL_RESPONSE
        || ngx_strcmp(ctx->usage.finish_reason, "length") == 0)
    {
        return;
    }

    kr_route_stats_record(st->stats, st->nmodels, ctx->model->index,
                          (int) ctx->task, (uint64_t) ctx->usage.output,
                          ctx->req.n);
}
