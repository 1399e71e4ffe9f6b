
/*
 * Copyright (C) kroute authors
 */

/*
 * kroute turns nginx into an LLM gateway: chat-completion requests are
 * read, classified by task type and routed to the cheapest catalog model
 * whose quality meets the request's bar; responses are metered exactly
 * and counted in a shared memory zone.  This file defines the module:
 * its directives, configuration and phase and filter registration.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


static ngx_int_t ngx_http_kroute_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_kroute_init(ngx_conf_t *cf);
static void *ngx_http_kroute_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_kroute_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_kroute_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_kroute_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_kroute_fallback(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_kroute_set_size(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_kroute_classifier_weights(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);


static ngx_conf_enum_t  ngx_http_kroute_invalid_body[] = {
    { ngx_string("reject"), NGX_HTTP_KROUTE_INVALID_REJECT },
    { ngx_string("pass"), NGX_HTTP_KROUTE_INVALID_PASS },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_kroute_formats[] = {
    { ngx_string("openai"), NGX_HTTP_KROUTE_FORMAT_OPENAI },
    { ngx_string("anthropic"), NGX_HTTP_KROUTE_FORMAT_ANTHROPIC },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_kroute_commands[] = {

    { ngx_string("kroute_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_kroute_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_provider"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_kroute_provider,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_model"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_kroute_model,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_task_name"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_kroute_task_name,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_split"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_kroute_split,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_cooldown"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_kroute_cooldown,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_kroute_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_classifier_weights"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_kroute_classifier_weights,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, enable),
      NULL },

    { ngx_string("kroute_format"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, format),
      &ngx_http_kroute_formats },

    { ngx_string("kroute_route_alias"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, route_alias),
      NULL },

    { ngx_string("kroute_quality_bar"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, quality_bar),
      NULL },

    { ngx_string("kroute_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_kroute_fallback,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_feature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, feature),
      NULL },

    { ngx_string("kroute_user"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, user),
      NULL },

    { ngx_string("kroute_cohort"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, cohort),
      NULL },

    { ngx_string("kroute_agent"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, agent),
      NULL },

    { ngx_string("kroute_body_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_kroute_set_size,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, body_max_size),
      NULL },

    { ngx_string("kroute_response_buffer_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_kroute_set_size,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, response_buffer_size),
      NULL },

    { ngx_string("kroute_invalid_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, invalid_body),
      &ngx_http_kroute_invalid_body },

    { ngx_string("kroute_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_kroute_loc_conf_t, headers),
      NULL },

    { ngx_string("kroute_task"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_kroute_task_rule,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("kroute_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_kroute_metrics,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_kroute_module_ctx = {
    ngx_http_kroute_preconfiguration,      /* preconfiguration */
    ngx_http_kroute_init,                  /* postconfiguration */

    ngx_http_kroute_create_main_conf,      /* create main configuration */
    ngx_http_kroute_init_main_conf,        /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_kroute_create_loc_conf,       /* create location configuration */
    ngx_http_kroute_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_kroute_module = {
    NGX_MODULE_V1,
    &ngx_http_kroute_module_ctx,           /* module context */
    ngx_http_kroute_commands,              /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_kroute_redis_init_process,    /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_kroute_redis_exit_process,    /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_kroute_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_kroute_add_variables(cf);
}


static ngx_int_t
ngx_http_kroute_init(ngx_conf_t *cf)
{
    ngx_array_t                *a;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_kroute_handler;

    /*
     * log phase handlers run in the order they were added: kroute's goes
     * first, so that access logs see the metered usage
     */

    a = &cmcf->phases[NGX_HTTP_LOG_PHASE].handlers;

    h = ngx_array_push(a);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h = a->elts;
    ngx_memmove(&h[1], &h[0], (a->nelts - 1) * sizeof(ngx_http_handler_pt));
    h[0] = ngx_http_kroute_log_handler;

    return ngx_http_kroute_filter_init(cf);
}


static void *
ngx_http_kroute_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_kroute_main_conf_t  *kmcf;

    kmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_kroute_main_conf_t));
    if (kmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     kmcf->shm_zone = NULL;
     *     kmcf->classifier = NULL;
     *     kmcf->redis = NULL;
     *     kmcf->route_models = NULL;
     *     kmcf->route_state = NULL;
     *     kmcf->health = { 0 };
     */

    if (ngx_array_init(&kmcf->providers, cf->pool, 4,
                       sizeof(ngx_http_kroute_provider_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&kmcf->models, cf->pool, 16,
                       sizeof(ngx_http_kroute_model_t))
        != NGX_OK)
    {
        return NULL;
    }

    return kmcf;
}


static char *
ngx_http_kroute_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    ngx_uint_t  i;

    if (kmcf->classifier == NULL) {
        kmcf->classifier = kr_classifier_default();
    }

    for (i = 0; i < KR_TASK_N; i++) {
        if (kmcf->task_names[i].data == NULL) {
            kmcf->task_names[i].data = (u_char *) kr_task_name(i);
            kmcf->task_names[i].len = ngx_strlen(kmcf->task_names[i].data);
        }
    }

    if (ngx_http_kroute_route_init_conf(cf, kmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (kmcf->redis && kmcf->shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"kroute_redis\" needs a \"kroute_zone\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_kroute_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_kroute_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_kroute_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->route_alias = { 0, NULL };
     *     conf->fallback_name = { 0, NULL };
     *     conf->fallback = NULL;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->format = NGX_CONF_UNSET_UINT;
    conf->quality_bar = NGX_CONF_UNSET_PTR;
    conf->feature = NGX_CONF_UNSET_PTR;
    conf->user = NGX_CONF_UNSET_PTR;
    conf->cohort = NGX_CONF_UNSET_PTR;
    conf->agent = NGX_CONF_UNSET_PTR;
    conf->body_max_size = NGX_CONF_UNSET_SIZE;
    conf->response_buffer_size = NGX_CONF_UNSET_SIZE;
    conf->invalid_body = NGX_CONF_UNSET_UINT;
    conf->headers = NGX_CONF_UNSET;
    conf->rules = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_kroute_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_kroute_loc_conf_t *prev = parent;
    ngx_http_kroute_loc_conf_t *conf = child;

    ngx_http_kroute_main_conf_t  *kmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_uint_value(conf->format, prev->format,
                              NGX_HTTP_KROUTE_FORMAT_OPENAI);
    ngx_conf_merge_str_value(conf->route_alias, prev->route_alias, "auto");
    ngx_conf_merge_ptr_value(conf->quality_bar, prev->quality_bar, NULL);
    ngx_conf_merge_ptr_value(conf->feature, prev->feature, NULL);
    ngx_conf_merge_ptr_value(conf->user, prev->user, NULL);
    ngx_conf_merge_ptr_value(conf->cohort, prev->cohort, NULL);
    ngx_conf_merge_ptr_value(conf->agent, prev->agent, NULL);
    ngx_conf_merge_size_value(conf->body_max_size, prev->body_max_size,
                              1024 * 1024);
    ngx_conf_merge_size_value(conf->response_buffer_size,
                              prev->response_buffer_size, 64 * 1024);
    ngx_conf_merge_uint_value(conf->invalid_body, prev->invalid_body,
                              NGX_HTTP_KROUTE_INVALID_REJECT);
    ngx_conf_merge_value(conf->headers, prev->headers, 1);
    ngx_conf_merge_ptr_value(conf->rules, prev->rules, NULL);
    ngx_conf_merge_str_value(conf->fallback_name, prev->fallback_name, "");

    if (conf->response_buffer_size < 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"kroute_response_buffer_size\" must be at "
                           "least 1k");
        return NGX_CONF_ERROR;
    }

    if (conf->fallback_name.len == 0) {
        return NGX_CONF_OK;
    }

    kmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_kroute_module);

    conf->fallback = ngx_http_kroute_find_model(kmcf, conf->fallback_name.data,
                                                conf->fallback_name.len);
    if (conf->fallback == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "kroute_fallback model \"%V\" is not in the "
                           "catalog", &conf->fallback_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_kroute_fallback(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_loc_conf_t *klcf = conf;

    ngx_str_t  *value;

    if (klcf->fallback_name.data != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ngx_str_set(&klcf->fallback_name, "");
        return NGX_CONF_OK;
    }

    klcf->fallback_name = value[1];

    return NGX_CONF_OK;
}


/* ngx_conf_set_size_slot() that names the bad value */

static char *
ngx_http_kroute_set_size(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *p = conf;

    size_t     *sp;
    ngx_str_t  *value;

    sp = (size_t *) (p + cmd->offset);

    if (*sp != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    *sp = ngx_parse_size(&value[1]);

    if (*sp == (size_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid size \"%V\" in \"%V\"", &value[1],
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_kroute_classifier_weights(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    char        err[256];
    ngx_str_t  *value, path;

    if (kmcf->classifier != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    kmcf->classifier = kr_classifier_load((const char *) path.data, err,
                                          sizeof(err));
    if (kmcf->classifier == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot load classifier weights \"%V\": %s",
                           &value[1], err);
        return NGX_CONF_ERROR;
    }

    /* TODO: free the weights with the configuration pool */

    return NGX_CONF_OK;
}
