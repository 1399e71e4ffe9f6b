
/*
 * Copyright (C) kroute authors
 */


/*
 * Routing for kroute: given the catalog, the request's task type, its
 * quality bar and its input size, pick the model whose expected cost is
 * lowest among those good enough for the task.  The expected output comes
 * from what the gateway has learned per model and task, else from the
 * catalog, else from a per-task default.  Providers that keep failing are
 * cooled down for a while, and A/B splits can pin a share of the traffic
 * to a model.  Everything here is plain data and arithmetic: the module
 * keeps the health and learned tables in shared memory and calls in.
 */


#ifndef _KR_ROUTE_H_INCLUDED_
#define _KR_ROUTE_H_INCLUDED_


#include "kr_json.h"
#include "kr_price.h"
#include "kr_classify.h"


#define KR_ROUTE_ARMS_MAX          4

/* an arm with this model index keeps the cheapest choice (control arm) */
#define KR_ROUTE_ARM_ROUTED        ((unsigned) -1)

/* metered responses before a learned mean replaces the defaults */
#define KR_ROUTE_STATS_MIN         20

/* at this count sum and count are halved: the mean follows drift */
#define KR_ROUTE_STATS_HALVE       4096

/* room that always holds the head of an explanation */
#define KR_ROUTE_EXPLAIN_LEN       512

#define KR_HEALTH_FAILURES         3
#define KR_HEALTH_WINDOW_MS        30000
#define KR_HEALTH_COOLDOWN_MS      60000

/* where the expected output of a candidate came from */
#define KR_ROUTE_OUT_DEFAULT       0
#define KR_ROUTE_OUT_CONFIG        1
#define KR_ROUTE_OUT_LEARNED       2


typedef struct {
    kr_str_t              name;
    kr_price_t            price;
    int                   quality[KR_TASK_N];  /* 0..100, -1 never */
    unsigned              provider;            /* index in health[] */
    unsigned              format;              /* API format of provider */
    uint64_t              output_tokens;       /* configured, 0 unset */
} kr_route_model_t;


/* one cell per model and task: stats[model * KR_TASK_N + task] */
typedef struct {
    uint64_t              out_sum;     /* output tokens per choice, summed */
    uint64_t              count;       /* metered responses */
} kr_route_stats_t;


/* per provider; plain data, lives in shared memory under the zone mutex */
typedef struct {
    uint32_t              failures;        /* counted failures in the run */
    uint32_t              cooldowns;       /* cool-downs so far, for metrics */
    uint64_t              run_start_ms;    /* first failure of the run */
    uint64_t              cool_until_ms;   /* cooling while now < this */
    uint64_t              last_failure_ms;
    int                   last_status;     /* last counted failure */
    int                   last_error;      /* its kr_usage_error_e */
} kr_health_t;


typedef struct {
    unsigned              failures;        /* run length that cools */
    uint64_t              window_ms;       /* the run must fit in this */
    uint64_t              cooldown_ms;
} kr_health_conf_t;


typedef struct {
    unsigned              model;           /* catalog index or ..._ROUTED */
    unsigned              weight;
} kr_route_arm_t;


typedef struct {
    kr_str_t              name;            /* shown in the explanation */
    int                   task;            /* KR_TASK_*, -1 any */
    uint32_t              feature;         /* kr_route_hash(), 0 any */
    size_t                n_arms;
    kr_route_arm_t        arms[KR_ROUTE_ARMS_MAX];
} kr_route_split_t;


typedef struct {
    uint64_t              est_input;       /* input tokens, estimated */
    int64_t               max_tokens;      /* -1 unset */
    int64_t               max_completion_tokens;  /* -1 unset */
    int64_t               n;               /* choices, < 1 means 1 */
    int                   task;            /* KR_TASK_* */
    int                   bar;             /* 0..100 */
    unsigned              format;
    uint64_t              now_ms;

    /* n_models * KR_TASK_N cells, or NULL */
    const kr_route_stats_t  *stats;

    /* indexed by kr_route_model_t.provider; NULL or short means healthy */
    const kr_health_t    *health;
    const kr_str_t       *provider_names;  /* for the explanation, or NULL */
    size_t                n_providers;

    const kr_route_split_t  *splits;       /* the first that applies wins */
    size_t                n_splits;
    uint32_t              feature;         /* kr_route_hash() of feature */
    uint32_t              sticky;          /* kr_route_hash() of user id */
} kr_route_input_t;


typedef struct {
    int                   chosen;          /* catalog index or -1 */
    unsigned              candidates;      /* meet bar, healthy, priced */
    unsigned              cooling;         /* meet bar, provider cooling */
    uint64_t              cost_pusd;       /* expected, chosen model */
    uint64_t              output_tokens;   /* expected, all n choices */
    int                   output_source;   /* KR_ROUTE_OUT_* */
    int                   split;           /* index of the split or -1 */
    int                   arm;             /* arm drawn in it or -1 */
    unsigned              arm_applied:1;   /* the arm decided the model */
    unsigned              all_cooling:1;   /* chosen although cooling */

    /* set by the caller; the explanation is always NUL-terminated */
    char                 *explain;
    size_t                explain_size;
    size_t                explain_len;
} kr_route_result_t;


/*
 * Picks the model for a request routed by alias.  Returns the chosen
 * catalog index, or -1 when no model of the request's format meets the
 * bar for its task.  When every model that meets the bar is cooling,
 * the cheapest of them is still chosen and res->all_cooling is set: a
 * provider that may have recovered beats refusing the request.
 */
int kr_route_pick(const kr_route_model_t *m, size_t n,
    const kr_route_input_t *in, kr_route_result_t *res);

/* expected output tokens of model i for all n choices, capped */
uint64_t kr_route_expected_output(const kr_route_model_t *m, size_t i,
    const kr_route_input_t *in, int *source);

/* expected cost of model i in pico-USD, saturating */
uint64_t kr_route_expected_cost(const kr_route_model_t *m, size_t i,
    const kr_route_input_t *in, uint64_t *output_tokens);

/* default expected output per choice for a task (see kr_route.c) */
uint64_t kr_route_default_output(int task, uint64_t est_input);

/*
 * Learns from one metered response: output is the provider-reported
 * completion total, n the number of choices asked for.  Callers skip
 * errors, estimates and replies cut by max_tokens (finish "length").
 */
void kr_route_stats_record(kr_route_stats_t *stats, size_t n_models,
    size_t model, int task, uint64_t output, int64_t n);

void kr_health_conf_init(kr_health_conf_t *conf);

/* conf NULL means the KR_HEALTH_* defaults */
void kr_health_record(kr_health_t *h, int http_status, int error_class,
    uint64_t now_ms, const kr_health_conf_t *conf);

int kr_health_ok(const kr_health_t *h, uint64_t now_ms);

/* 32-bit hash of a user, request or feature id, well mixed; never 0 */
uint32_t kr_route_hash(const unsigned char *p, size_t len);


#endif /* _KR_ROUTE_H_INCLUDED_ */
