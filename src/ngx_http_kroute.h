
/*
 * Copyright (C) kroute authors
 */

/*
 * Shared declarations of kroute's nginx-facing parts: the configuration
 * (providers, model catalog, per-location settings), the per-request
 * context that carries a request from body reading through routing to
 * response metering, and the shared memory zone of counters.
 */


#ifndef _NGX_HTTP_KROUTE_H_INCLUDED_
#define _NGX_HTTP_KROUTE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <zlib.h>

#include "kr_json.h"
#include "kr_request.h"
#include "kr_sse.h"
#include "kr_usage.h"
#include "kr_price.h"
#include "kr_classify.h"
#include "kr_route.h"


#define NGX_HTTP_KROUTE_FORMAT_OPENAI     0
#define NGX_HTTP_KROUTE_FORMAT_ANTHROPIC  1

#define NGX_HTTP_KROUTE_INVALID_REJECT    0
#define NGX_HTTP_KROUTE_INVALID_PASS      1

#define NGX_HTTP_KROUTE_USAGE_NONE        0
#define NGX_HTTP_KROUTE_USAGE_PROVIDER    1
#define NGX_HTTP_KROUTE_USAGE_ESTIMATE    2

/* attribution dimensions of a counter series */
#define NGX_HTTP_KROUTE_DIM_FEATURE       0
#define NGX_HTTP_KROUTE_DIM_TASK          1
#define NGX_HTTP_KROUTE_DIM_MODEL         2
#define NGX_HTTP_KROUTE_DIM_PROVIDER      3
#define NGX_HTTP_KROUTE_DIM_COHORT        4
#define NGX_HTTP_KROUTE_DIM_AGENT         5
#define NGX_HTTP_KROUTE_DIM_ARM           6
#define NGX_HTTP_KROUTE_DIM_STATUS        7
#define NGX_HTTP_KROUTE_NDIMS             8

/* the dimensions Redis gets: feature .. agent */
#define NGX_HTTP_KROUTE_REDIS_DIMS        6

#define NGX_HTTP_KROUTE_DIM_MAX           64

/* latency and time-to-first-token histogram bounds, milliseconds */
#define NGX_HTTP_KROUTE_NBUCKETS          12

/* usage above this many tokens for one request is not believed */
#define NGX_HTTP_KROUTE_TOKENS_MAX        10000000000LL

/* per-hour metrics sent to Redis, in this order */
#define NGX_HTTP_KROUTE_M_REQ             0
#define NGX_HTTP_KROUTE_M_ERR             1
#define NGX_HTTP_KROUTE_M_IN              2
#define NGX_HTTP_KROUTE_M_OUT             3
#define NGX_HTTP_KROUTE_M_CACHED          4
#define NGX_HTTP_KROUTE_M_CW              5
#define NGX_HTTP_KROUTE_M_REASON          6
#define NGX_HTTP_KROUTE_M_COST            7
#define NGX_HTTP_KROUTE_M_LAT             8
#define NGX_HTTP_KROUTE_M_TTFT            9
#define NGX_HTTP_KROUTE_M_UNPARSED        10
#define NGX_HTTP_KROUTE_M_ESTIMATED       11
#define NGX_HTTP_KROUTE_NMETRICS          12


typedef struct {
    ngx_str_t                      name;
    ngx_str_t                      url;
    ngx_str_t                      host;
    ngx_str_t                      authorization;
    ngx_str_t                      key;
    ngx_uint_t                     format;
    ngx_uint_t                     index;
} ngx_http_kroute_provider_t;


typedef struct {
    ngx_str_t                      name;
    ngx_http_kroute_provider_t    *provider;
    kr_price_t                     price;
    ngx_int_t                      quality[KR_TASK_N];
    ngx_array_t                   *aliases;          /* of ngx_str_t */
    ngx_uint_t                     output_tokens;
    ngx_uint_t                     index;
} ngx_http_kroute_model_t;


typedef struct {
    ngx_str_t                      host;
    ngx_uint_t                     port;
    ngx_str_t                      unix_path;
    ngx_str_t                      password;
    ngx_int_t                      db;
    ngx_str_t                      prefix;
    ngx_str_t                      instance;
    ngx_msec_t                     interval;
    ngx_msec_t                     timeout;
} ngx_http_kroute_redis_conf_t;


/* routing state of one catalog, in the shared zone */
typedef struct ngx_http_kroute_route_state_s  ngx_http_kroute_route_state_t;

struct ngx_http_kroute_route_state_s {
    uint32_t                       signature;
    ngx_uint_t                     nmodels;
    ngx_uint_t                     nproviders;
    kr_health_t                   *health;
    kr_route_stats_t              *stats;
    ngx_http_kroute_route_state_t *next;
};


typedef struct {
    ngx_array_t                    providers;
    ngx_array_t                    models;
    ngx_shm_zone_t                *shm_zone;
    const kr_classifier_t         *classifier;
    ngx_http_kroute_redis_conf_t  *redis;

    ngx_str_t                      task_names[KR_TASK_N];

    kr_route_model_t              *route_models;
    kr_str_t                      *provider_names;
    ngx_array_t                    splits;           /* kr_route_split_t */
    kr_health_conf_t               health;
    ngx_http_kroute_route_state_t *route_state;
} ngx_http_kroute_main_conf_t;


typedef struct {
    ngx_uint_t                     task;
    ngx_uint_t                     index;
    ngx_regex_t                   *system;
    ngx_regex_t                   *user;
    ngx_int_t                      tools;            /* -1: either */
    ngx_int_t                      json;             /* -1: either */
    size_t                         context_min;
    size_t                         messages_min;
} ngx_http_kroute_rule_t;


typedef struct {
    ngx_flag_t                     enable;
    ngx_uint_t                     format;
    ngx_str_t                      route_alias;
    ngx_http_complex_value_t      *quality_bar;
    ngx_http_complex_value_t      *feature;
    ngx_http_complex_value_t      *user;
    ngx_http_complex_value_t      *cohort;
    ngx_http_complex_value_t      *agent;
    ngx_str_t                      fallback_name;
    ngx_http_kroute_model_t       *fallback;
    size_t                         body_max_size;
    size_t                         response_buffer_size;
    ngx_uint_t                     invalid_body;
    ngx_flag_t                     headers;
    ngx_array_t                   *rules;
} ngx_http_kroute_loc_conf_t;


typedef struct {
    uint64_t                       requests;
    uint64_t                       errors;
    uint64_t                       input;
    uint64_t                       output;
    uint64_t                       cached;
    uint64_t                       cache_write;
    uint64_t                       reasoning;
    uint64_t                       cost_pusd;
    uint64_t                       estimated;
    uint64_t                       unparsed;
    uint64_t                       latency_ms;
    uint64_t                       latency_count;
    uint64_t                       ttft_ms;
    uint64_t                       ttft_count;
    uint64_t                       latency_bucket[NGX_HTTP_KROUTE_NBUCKETS];
    uint64_t                       ttft_bucket[NGX_HTTP_KROUTE_NBUCKETS];
} ngx_http_kroute_counters_t;


typedef struct {
    ngx_rbtree_node_t              node;
    ngx_queue_t                    queue;
    ngx_http_kroute_counters_t     total;
    u_short                        keylen;
    u_char                         data[1];     /* dims joined by 0x1f */
} ngx_http_kroute_series_t;


typedef struct {
    ngx_rbtree_t                   rbtree;
    ngx_rbtree_node_t              sentinel;
    ngx_queue_t                    queue;
    ngx_uint_t                     nseries;
    uint64_t                       drops;
    ngx_msec_t                     drop_logged;

    /* deltas waiting for Redis and the batch on its way */
    ngx_rbtree_t                   deltas;
    ngx_rbtree_node_t              delta_sentinel;
    ngx_queue_t                    delta_queue;
    ngx_uint_t                     ndeltas;
    uint64_t                       boot;
    uint64_t                       seq;
    ngx_msec_t                     cutting;
    u_char                        *batch_buf;
    size_t                         batch_size;
    u_char                        *inflight;
    size_t                         inflight_len;
    uint64_t                       inflight_id;
    ngx_uint_t                     inflight_records;
    uint64_t                       redis_batches;
    uint64_t                       redis_duplicates;
    uint64_t                       redis_failures;
    uint64_t                       redis_drops;
    ngx_msec_t                     redis_drop_logged;
    ngx_uint_t                     redis_down_logged;
    ngx_uint_t                     redis_connected;

    ngx_http_kroute_route_state_t *route_states;
} ngx_http_kroute_shctx_t;


typedef struct {
    ngx_http_kroute_shctx_t       *sh;
    ngx_slab_pool_t               *shpool;
    ngx_http_kroute_main_conf_t   *kmcf;
} ngx_http_kroute_shm_t;


typedef struct {
    kr_request_t                   req;
    kr_usage_t                     usage;

    ngx_http_kroute_model_t       *model;
    ngx_http_kroute_provider_t    *provider;
    ngx_uint_t                     task;
    ngx_int_t                      rule;
    ngx_str_t                      model_requested;
    ngx_str_t                      upstream;
    ngx_str_t                      route_reason;
    ngx_str_t                      arm;
    const char                    *error_code;
    ngx_str_t                      dims[NGX_HTTP_KROUTE_NDIMS];
    ngx_str_t                      user;
    u_char                         request_id[32];

    ngx_int_t                      status;
    ngx_uint_t                     format;
    ngx_uint_t                     usage_source;
    uint64_t                       est_input;
    uint64_t                       est_output_bytes;
    uint64_t                       cost_pusd;

    ngx_msec_t                     start;
    ngx_msec_t                     first_byte;
    ngx_msec_t                     last_byte;

    /* response metering */
    kr_sse_t                       sse;
    u_char                        *body;             /* JSON response */
    size_t                         body_len;
    size_t                         body_size;
    off_t                          emitted_off;
    off_t                          safe_off;
    off_t                          drop_start;
    off_t                          drop_end;
    ngx_buf_t                     *hold;
    ngx_chain_t                   *free;
    ngx_chain_t                   *busy;
    z_stream                      *zstream;
    u_char                        *zbuf;

    unsigned                       done:1;
    unsigned                       routed:1;
    unsigned                       unparsed:1;
    unsigned                       injected:1;
    unsigned                       unedited:1;
    unsigned                       sse_response:1;
    unsigned                       metering:1;
    unsigned                       gzip:1;
    unsigned                       zerror:1;
    unsigned                       overflow:1;
    unsigned                       own_reply:1;
    unsigned                       finalized:1;
} ngx_http_kroute_ctx_t;


extern ngx_module_t  ngx_http_kroute_module;


/* catalog: kroute_provider and kroute_model directives */
char *ngx_http_kroute_provider(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_kroute_model(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_http_kroute_model_t *ngx_http_kroute_find_model(
    ngx_http_kroute_main_conf_t *kmcf, u_char *name, size_t len);
char *ngx_http_kroute_task_name(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_str_t *ngx_http_kroute_task_label(ngx_http_request_t *r,
    ngx_uint_t task);

/* task rules */
char *ngx_http_kroute_task_rule(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_kroute_rules_match(ngx_http_request_t *r,
    ngx_http_kroute_loc_conf_t *klcf, kr_classify_input_t *in);

/* request phase: body, classification, routing, rewrite */
ngx_int_t ngx_http_kroute_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_kroute_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, ngx_str_t *message);

/* response metering */
ngx_int_t ngx_http_kroute_filter_init(ngx_conf_t *cf);
ngx_int_t ngx_http_kroute_log_handler(ngx_http_request_t *r);
void ngx_http_kroute_finalize(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx);

/* routing over the catalog: splits, provider health, learned output */
char *ngx_http_kroute_split(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_kroute_cooldown(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_kroute_route_init_conf(ngx_conf_t *cf,
    ngx_http_kroute_main_conf_t *kmcf);
ngx_int_t ngx_http_kroute_route_init_zone(ngx_http_kroute_shm_t *shm);
void ngx_http_kroute_route_learn(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, ngx_http_kroute_shm_t *shm);

/* shared memory zone */
char *ngx_http_kroute_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_http_kroute_shm_account(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx);
extern ngx_msec_t  ngx_http_kroute_buckets[NGX_HTTP_KROUTE_NBUCKETS];

/* Redis link */
char *ngx_http_kroute_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_kroute_redis_init_zone(ngx_http_kroute_shm_t *shm,
    size_t size);
void ngx_http_kroute_redis_account(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, ngx_http_kroute_shm_t *shm, ngx_str_t *key,
    uint64_t *value);
ngx_int_t ngx_http_kroute_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_kroute_redis_exit_process(ngx_cycle_t *cycle);

/* Prometheus endpoint */
char *ngx_http_kroute_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* variables */
ngx_int_t ngx_http_kroute_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_KROUTE_H_INCLUDED_ */
