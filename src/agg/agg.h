
/*
 * Copyright (C) kroute authors
 */

/*
 * kroute-agg: the cron companion of the kroute module.  It reads the hour
 * buckets the module writes to Redis, folds them into day and month
 * totals, and prints cost reports, charts and alerts.  This header holds
 * the types shared by its parts: exact money, UTC hours, the in-memory
 * fact tables, the configuration and the model catalog.
 */


#ifndef KR_AGG_H_INCLUDED
#define KR_AGG_H_INCLUDED


#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <hiredis/hiredis.h>


#define KR_AGG_OK            0
#define KR_AGG_EXIT_ALERTS   1
#define KR_AGG_EXIT_USAGE    2
#define KR_AGG_EXIT_CONFIG   3
#define KR_AGG_EXIT_CONNECT  4
#define KR_AGG_EXIT_REDIS    5
#define KR_AGG_EXIT_OUTPUT   6

#define KR_AGG_NDIMS         6
#define KR_AGG_DIM_FEATURE   0
#define KR_AGG_DIM_TASK      1
#define KR_AGG_DIM_MODEL     2
#define KR_AGG_DIM_PROVIDER  3
#define KR_AGG_DIM_COHORT    4
#define KR_AGG_DIM_AGENT     5

#define KR_AGG_M_REQ         0
#define KR_AGG_M_ERR         1
#define KR_AGG_M_IN          2
#define KR_AGG_M_OUT         3
#define KR_AGG_M_CACHED      4
#define KR_AGG_M_CW          5
#define KR_AGG_M_REASON      6
#define KR_AGG_M_COST        7
#define KR_AGG_M_LAT         8
#define KR_AGG_M_TTFT        9
#define KR_AGG_M_UNPARSED    10
#define KR_AGG_M_ESTIMATED   11
#define KR_AGG_NMETRICS      12

#define KR_AGG_SEP           '\x1f'

#define KR_AGG_PICO_PER_USD  1000000000000ULL
#define KR_AGG_PICO_PER_MICRO 1000000ULL


/* sums of counters; a month of pico-USD may pass 2^64 */
typedef unsigned __int128  kr_u128_t;
typedef __int128           kr_i128_t;


typedef struct {
    kr_u128_t              m[KR_AGG_NMETRICS];
} kr_agg_metrics_t;


typedef struct {
    char                  *key;
    size_t                 key_len;
    int                    slot;
    uint32_t               hash;
    kr_agg_metrics_t       v;
} kr_agg_row_t;


/* string (+ slot) -> metrics, open addressing */
typedef struct {
    kr_agg_row_t         **rows;
    size_t                 nrows;
    kr_agg_row_t         **slots;
    size_t                 cap;
} kr_agg_map_t;


/* what one window of data holds */
typedef struct {
    kr_agg_map_t           facts;     /* dims, per time slot */
    kr_agg_map_t           users;     /* user */
    kr_agg_map_t           ufeat;     /* user \x1f feature */
    kr_agg_map_t           ucohort;   /* user \x1f cohort */
    long                   from;      /* hour index, inclusive */
    long                   to;        /* hour index, exclusive */
    long                   ufrom;     /* day index range of user data */
    long                   uto;
    int                    nhashes;   /* non-empty hashes read */
    int                    expired;   /* hours asked for, not found */
} kr_agg_data_t;


typedef struct {
    char                  *name;
    char                  *provider;
    uint64_t               input;     /* pico-USD per token */
    uint64_t               output;
    uint64_t               cached;
    uint64_t               cache_write;
    int                    has_cached;
    int                    has_cw;
    int                    quality_default;
    size_t                 nquality;
    char                 **quality_task;
    int                   *quality_score;
} kr_agg_model_t;


typedef struct {
    char                  *name;
    kr_u128_t              price;     /* pico-USD per user per month */
} kr_agg_plan_t;


typedef struct {
    char                  *task;
    int                    bar;
} kr_agg_bar_t;


typedef struct {
    char                  *redis_host;
    int                    redis_port;
    char                  *redis_password_file;
    int                    redis_db;
    int                    timeout_ms;
    char                  *prefix;
    char                  *catalog;
    long                   retention_hours;
    long                   final_after_hours;

    size_t                 ncheap;
    char                 **cheap;
    size_t                 nbars;
    kr_agg_bar_t          *bars;
    int                    default_bar;
    size_t                 nplans;
    kr_agg_plan_t         *plans;

    int                    alert_cpr_growth_bp;
    int                    alert_error_rate_bp;
    int                    alert_error_factor;
    int                    alert_shift_bp;
    long                   alert_min_requests;

    size_t                 nmodels;
    kr_agg_model_t        *models;
} kr_agg_conf_t;


/* a table the report builds and the output formats render */
typedef enum {
    KR_AGG_C_STR = 0,
    KR_AGG_C_INT,
    KR_AGG_C_MONEY,
    KR_AGG_C_PCT,
    KR_AGG_C_GROWTH
} kr_agg_ctype_e;


typedef struct {
    kr_agg_ctype_e         type;
    int                    null;
    char                  *s;
    kr_i128_t              n;
} kr_agg_cell_t;


typedef struct {
    const char            *name;
    kr_agg_ctype_e         type;
} kr_agg_col_t;


typedef struct {
    const char            *name;
    const char            *title;
    size_t                 ncols;
    const kr_agg_col_t    *cols;
    size_t                 nrows;
    size_t                 cap;
    kr_agg_cell_t         *cells;
} kr_agg_table_t;


typedef struct {
    kr_agg_table_t       **tables;
    size_t                 ntables;
    char                 **notes;
    size_t                 nnotes;
    long                   from;
    long                   to;
    long                   prev_from;
    int                    empty;
} kr_agg_report_t;


typedef struct {
    const char            *kind;
    char                  *subject;
    char                  *message;
} kr_agg_alert_t;


/* util.c */
void *kr_agg_alloc(size_t size);
char *kr_agg_strdup(const char *s);
char *kr_agg_strndup(const char *s, size_t n);
char *kr_agg_sprintf(const char *fmt, ...);
void kr_agg_die_oom(void);
long kr_agg_days_from_civil(long y, long m, long d);
void kr_agg_civil_from_days(long z, long *y, long *m, long *d);
void kr_agg_hour_key(long hour, char *buf);
void kr_agg_day_key(long day, char *buf);
void kr_agg_hour_iso(long hour, char *buf);
int kr_agg_parse_time(const char *s, long *hour);
int kr_agg_parse_u128(const char *s, size_t len, kr_u128_t *v);
int kr_agg_parse_usd(const char *s, int maxfrac, kr_u128_t *v);
char *kr_agg_u128_str(kr_u128_t v, char *buf);
char *kr_agg_usd_str(kr_i128_t pico, char *buf);
char *kr_agg_pct_str(kr_i128_t bp, int sign, char *buf);
kr_u128_t kr_agg_div_round(kr_u128_t a, kr_u128_t b);
kr_i128_t kr_agg_growth_bp(kr_u128_t cur, kr_u128_t prev);

void kr_agg_map_init(kr_agg_map_t *map);
void kr_agg_map_free(kr_agg_map_t *map);
kr_agg_metrics_t *kr_agg_map_get(kr_agg_map_t *map, const char *key,
    size_t len, int slot);
kr_agg_metrics_t *kr_agg_map_find(kr_agg_map_t *map, const char *key,
    size_t len, int slot);
void kr_agg_map_sort(kr_agg_map_t *map, int metric);
int kr_agg_metric_index(const char *name, size_t len);
const char *kr_agg_metric_name(int i);

/* conf.c */
int kr_agg_conf_load(kr_agg_conf_t *conf, const char *path);
int kr_agg_catalog_load(kr_agg_conf_t *conf, const char *path);
void kr_agg_conf_free(kr_agg_conf_t *conf);
int kr_agg_parse_duration(const char *s, long *hours);
int kr_agg_quality(const kr_agg_model_t *model, const char *task);
int kr_agg_bar(const kr_agg_conf_t *conf, const char *task);

/* redis.c */
redisContext *kr_agg_redis_connect(const kr_agg_conf_t *conf);
redisReply *kr_agg_cmd(redisContext *c, const char *fmt, ...);
int kr_agg_redis_failed(redisContext *c, redisReply *r, const char *what);
int kr_agg_instances(redisContext *c, const kr_agg_conf_t *conf,
    char ***names, size_t *n);
void kr_agg_free_strings(char **v, size_t n);
int kr_agg_scan(redisContext *c, const char *pattern, char ***keys,
    size_t *n);
int kr_agg_hash_add(kr_agg_map_t *map, redisReply *r, int slot, int dims);
int kr_agg_load(redisContext *c, const kr_agg_conf_t *conf,
    kr_agg_data_t *data, long from, long to, long slot_hours);
void kr_agg_data_free(kr_agg_data_t *data);

/* rollup.c */
int kr_agg_rollup(redisContext *c, const kr_agg_conf_t *conf, long now,
    int verbose);

/* report.c */
int kr_agg_report_build(const kr_agg_conf_t *conf, kr_agg_data_t *cur,
    kr_agg_data_t *prev, kr_agg_report_t *rep);
void kr_agg_report_free(kr_agg_report_t *rep);
kr_agg_table_t *kr_agg_table_new(const char *name, const char *title,
    const kr_agg_col_t *cols, size_t ncols);
void kr_agg_table_free(kr_agg_table_t *t);
kr_agg_cell_t *kr_agg_table_row(kr_agg_table_t *t);
void kr_agg_cell_str(kr_agg_cell_t *c, const char *s, size_t len);
void kr_agg_cell_num(kr_agg_cell_t *c, kr_i128_t n);
void kr_agg_cell_null(kr_agg_cell_t *c);
void kr_agg_by_dim(kr_agg_map_t *facts, int dim, kr_agg_map_t *out);
void kr_agg_report_note(kr_agg_report_t *rep, char *note);
int kr_agg_cheapest(const kr_agg_conf_t *conf, const char *task,
    const kr_agg_metrics_t *tokens, kr_u128_t *cost);
kr_u128_t kr_agg_model_cost(const kr_agg_model_t *m,
    const kr_agg_metrics_t *v);

/* output.c */
int kr_agg_output_text(FILE *f, const kr_agg_report_t *rep);
int kr_agg_output_json(FILE *f, const kr_agg_report_t *rep);
int kr_agg_output_csv(FILE *f, const kr_agg_report_t *rep,
    const char *only);

/* chart.c */
int kr_agg_chart(FILE *f, const kr_agg_conf_t *conf, kr_agg_data_t *cur,
    const kr_agg_report_t *rep, long slot_hours);

/* alerts.c */
int kr_agg_alerts(const kr_agg_conf_t *conf, kr_agg_data_t *cur,
    kr_agg_data_t *prev, kr_agg_alert_t **alerts, size_t *n);
int kr_agg_alerts_print(FILE *f, kr_agg_alert_t *alerts, size_t n,
    int json, const kr_agg_data_t *cur);
void kr_agg_alerts_free(kr_agg_alert_t *alerts, size_t n);


#endif /* KR_AGG_H_INCLUDED */
