
/*
 * Copyright (C) kroute authors
 */

/*
 * Report of kroute-agg: turns the facts of a window and of the window
 * before it into tables (totals; cost, tokens and requests by feature,
 * task type, model, provider, cohort, agent and user, with growth; cost
 * per active user by feature and by cohort against the plan price; the
 * share of spend on cheap-able task types and what routing them to the
 * cheapest model meeting their quality bar would save).  All sums and
 * ratios are integers: pico-USD, tokens, basis points.
 */


#include <stdlib.h>
#include <string.h>
#include "agg.h"


static const kr_agg_col_t  kr_agg_summary_cols[] = {
    { "window_from", KR_AGG_C_STR },
    { "window_to", KR_AGG_C_STR },
    { "hours", KR_AGG_C_INT },
    { "requests", KR_AGG_C_INT },
    { "errors", KR_AGG_C_INT },
    { "input_tokens", KR_AGG_C_INT },
    { "output_tokens", KR_AGG_C_INT },
    { "cached_tokens", KR_AGG_C_INT },
    { "reasoning_tokens", KR_AGG_C_INT },
    { "cost", KR_AGG_C_MONEY },
    { "cost_per_request", KR_AGG_C_MONEY },
    { "prev_requests", KR_AGG_C_INT },
    { "prev_cost", KR_AGG_C_MONEY },
    { "requests_growth", KR_AGG_C_GROWTH },
    { "cost_growth", KR_AGG_C_GROWTH },
    { "active_users", KR_AGG_C_INT },
    { "cheapable_cost", KR_AGG_C_MONEY },
    { "cheapable_share", KR_AGG_C_PCT },
    { "potential_saving", KR_AGG_C_MONEY }
};


#define KR_AGG_DIM_COLS(first)                                               \
    { first, KR_AGG_C_STR },                                                 \
    { "requests", KR_AGG_C_INT },                                            \
    { "errors", KR_AGG_C_INT },                                              \
    { "input_tokens", KR_AGG_C_INT },                                        \
    { "output_tokens", KR_AGG_C_INT },                                       \
    { "cached_tokens", KR_AGG_C_INT },                                       \
    { "cost", KR_AGG_C_MONEY },                                              \
    { "share", KR_AGG_C_PCT },                                               \
    { "prev_cost", KR_AGG_C_MONEY },                                         \
    { "cost_growth", KR_AGG_C_GROWTH },                                      \
    { "requests_growth", KR_AGG_C_GROWTH },                                  \
    { "avg_latency_ms", KR_AGG_C_INT }


static const kr_agg_col_t  kr_agg_dim_cols[KR_AGG_NDIMS][12] = {
    { KR_AGG_DIM_COLS("feature") },
    { KR_AGG_DIM_COLS("task") },
    { KR_AGG_DIM_COLS("model") },
    { KR_AGG_DIM_COLS("provider") },
    { KR_AGG_DIM_COLS("cohort") },
    { KR_AGG_DIM_COLS("agent") }
};


static const char  *kr_agg_dim_tables[KR_AGG_NDIMS][2] = {
    { "by_feature", "Cost by feature" },
    { "by_task", "Cost by task type" },
    { "by_model", "Cost by model" },
    { "by_provider", "Cost by provider" },
    { "by_cohort", "Cost by cohort" },
    { "by_agent", "Cost by agent" }
};


static const kr_agg_col_t  kr_agg_user_cols[] = {
    { "user", KR_AGG_C_STR },
    { "requests", KR_AGG_C_INT },
    { "input_tokens", KR_AGG_C_INT },
    { "output_tokens", KR_AGG_C_INT },
    { "cost", KR_AGG_C_MONEY },
    { "share", KR_AGG_C_PCT },
    { "prev_cost", KR_AGG_C_MONEY },
    { "cost_growth", KR_AGG_C_GROWTH }
};


static const kr_agg_col_t  kr_agg_fpu_cols[] = {
    { "feature", KR_AGG_C_STR },
    { "active_users", KR_AGG_C_INT },
    { "cost", KR_AGG_C_MONEY },
    { "cost_per_user", KR_AGG_C_MONEY },
    { "prev_active_users", KR_AGG_C_INT },
    { "prev_cost_per_user", KR_AGG_C_MONEY },
    { "cost_per_user_growth", KR_AGG_C_GROWTH }
};


static const kr_agg_col_t  kr_agg_cpu_cols[] = {
    { "cohort", KR_AGG_C_STR },
    { "active_users", KR_AGG_C_INT },
    { "cost", KR_AGG_C_MONEY },
    { "cost_per_user", KR_AGG_C_MONEY },
    { "cost_per_user_month", KR_AGG_C_MONEY },
    { "plan_price", KR_AGG_C_MONEY },
    { "margin_per_user_month", KR_AGG_C_MONEY },
    { "plan_used", KR_AGG_C_PCT },
    { "status", KR_AGG_C_STR }
};


static const kr_agg_col_t  kr_agg_cheap_cols[] = {
    { "task", KR_AGG_C_STR },
    { "requests", KR_AGG_C_INT },
    { "cost", KR_AGG_C_MONEY },
    { "share_of_total", KR_AGG_C_PCT },
    { "cheapest_model", KR_AGG_C_STR },
    { "routed_cost", KR_AGG_C_MONEY },
    { "saving", KR_AGG_C_MONEY },
    { "saving_share", KR_AGG_C_PCT }
};


static const kr_agg_col_t  kr_agg_quality_cols[] = {
    { "model", KR_AGG_C_STR },
    { "requests", KR_AGG_C_INT },
    { "error_rate", KR_AGG_C_PCT },
    { "prev_error_rate", KR_AGG_C_PCT },
    { "estimated_share", KR_AGG_C_PCT },
    { "prev_estimated_share", KR_AGG_C_PCT },
    { "unparsed_share", KR_AGG_C_PCT },
    { "avg_output_tokens", KR_AGG_C_INT },
    { "prev_avg_output_tokens", KR_AGG_C_INT }
};


#define KR_NCOLS(a)  (sizeof(a) / sizeof((a)[0]))


kr_agg_table_t *
kr_agg_table_new(const char *name, const char *title,
    const kr_agg_col_t *cols, size_t ncols)
{
    kr_agg_table_t  *t;

    t = kr_agg_alloc(sizeof(kr_agg_table_t));
    t->name = name;
    t->title = title;
    t->cols = cols;
    t->ncols = ncols;

    return t;
}


void
kr_agg_table_free(kr_agg_table_t *t)
{
    size_t  i;

    for (i = 0; i < t->nrows * t->ncols; i++) {
        free(t->cells[i].s);
    }

    free(t->cells);
    free(t);
}


kr_agg_cell_t *
kr_agg_table_row(kr_agg_table_t *t)
{
    size_t          i;
    kr_agg_cell_t  *row;

    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells,
                           t->cap * t->ncols * sizeof(kr_agg_cell_t));
        if (t->cells == NULL) {
            kr_agg_die_oom();
        }
    }

    row = &t->cells[t->nrows++ * t->ncols];
    memset(row, 0, t->ncols * sizeof(kr_agg_cell_t));

    for (i = 0; i < t->ncols; i++) {
        row[i].type = t->cols[i].type;
    }

    return row;
}


void
kr_agg_cell_str(kr_agg_cell_t *c, const char *s, size_t len)
{
    free(c->s);
    c->s = kr_agg_strndup(s, len);
}


void
kr_agg_cell_num(kr_agg_cell_t *c, kr_i128_t n)
{
    c->n = n;
    c->null = 0;
}


void
kr_agg_cell_null(kr_agg_cell_t *c)
{
    c->null = 1;
}


/* growth cell: null when there is nothing to compare with */
static void
kr_agg_cell_growth(kr_agg_cell_t *c, kr_u128_t cur, kr_u128_t prev)
{
    if (prev == 0) {
        c->null = 1;
        kr_agg_cell_str(c, cur ? "new" : "", cur ? 3 : 0);
        return;
    }

    kr_agg_cell_num(c, kr_agg_growth_bp(cur, prev));
}


static void
kr_agg_cell_share(kr_agg_cell_t *c, kr_u128_t part, kr_u128_t total)
{
    if (total == 0) {
        c->null = 1;
        return;
    }

    kr_agg_cell_num(c, (kr_i128_t) kr_agg_div_round(part * 10000, total));
}


void
kr_agg_report_note(kr_agg_report_t *rep, char *note)
{
    rep->notes = realloc(rep->notes, (rep->nnotes + 1) * sizeof(char *));
    if (rep->notes == NULL) {
        kr_agg_die_oom();
    }

    rep->notes[rep->nnotes++] = note;
}


static void
kr_agg_report_add(kr_agg_report_t *rep, kr_agg_table_t *t)
{
    rep->tables = realloc(rep->tables,
                          (rep->ntables + 1) * sizeof(kr_agg_table_t *));
    if (rep->tables == NULL) {
        kr_agg_die_oom();
    }

    rep->tables[rep->ntables++] = t;
}


/* the n-th \x1f-separated part of a key */
static const char *
kr_agg_part(const char *key, size_t len, int n, size_t *plen)
{
    const char  *p, *end, *sep;

    p = key;
    end = key + len;

    while (n-- > 0) {
        sep = memchr(p, KR_AGG_SEP, (size_t) (end - p));
        if (sep == NULL) {
            *plen = 0;
            return end;
        }
        p = sep + 1;
    }

    sep = memchr(p, KR_AGG_SEP, (size_t) (end - p));
    *plen = (size_t) ((sep ? sep : end) - p);

    return p;
}


static void
kr_agg_metrics_add(kr_agg_metrics_t *to, const kr_agg_metrics_t *from)
{
    int  i;

    for (i = 0; i < KR_AGG_NMETRICS; i++) {
        to->m[i] += from->m[i];
    }
}


/* facts summed over one dimension (or, with dim < 0, the total) */
void
kr_agg_by_dim(kr_agg_map_t *facts, int dim, kr_agg_map_t *out)
{
    size_t         i, len;
    const char    *p;
    kr_agg_row_t  *row;

    for (i = 0; i < facts->nrows; i++) {
        row = facts->rows[i];

        if (dim < 0) {
            p = "";
            len = 0;

        } else {
            p = kr_agg_part(row->key, row->key_len, dim, &len);
        }

        kr_agg_metrics_add(kr_agg_map_get(out, p, len, 0), &row->v);
    }
}


/* users per second part (feature or cohort) of "user\x1fpart" keys */
static void
kr_agg_by_part(kr_agg_map_t *src, kr_agg_map_t *out, int users_metric)
{
    size_t             i, len;
    const char        *p;
    kr_agg_row_t      *row;
    kr_agg_metrics_t  *m;

    for (i = 0; i < src->nrows; i++) {
        row = src->rows[i];
        p = kr_agg_part(row->key, row->key_len, 1, &len);

        m = kr_agg_map_get(out, p, len, 0);
        kr_agg_metrics_add(m, &row->v);

        /* count the user once per part: it is one key per user */
        if (row->v.m[KR_AGG_M_REQ] || row->v.m[KR_AGG_M_COST]) {
            m->m[users_metric] += 1;
        }
    }
}


kr_u128_t
kr_agg_model_cost(const kr_agg_model_t *m, const kr_agg_metrics_t *v)
{
    kr_u128_t  in, cached, cw, uncached;

    in = v->m[KR_AGG_M_IN];
    cached = v->m[KR_AGG_M_CACHED];
    cw = v->m[KR_AGG_M_CW];
    uncached = in > cached + cw ? in - cached - cw : 0;

    return uncached * m->input
           + cached * (m->has_cached ? m->cached : m->input)
           + cw * (m->has_cw ? m->cache_write : m->input)
           + v->m[KR_AGG_M_OUT] * m->output;
}


/* index of the cheapest model meeting the task's bar for these tokens */
int
kr_agg_cheapest(const kr_agg_conf_t *conf, const char *task,
    const kr_agg_metrics_t *tokens, kr_u128_t *cost)
{
    int        best, bar;
    size_t     i;
    kr_u128_t  c;

    best = -1;
    bar = kr_agg_bar(conf, task);

    for (i = 0; i < conf->nmodels; i++) {
        if (kr_agg_quality(&conf->models[i], task) < bar) {
            continue;
        }

        c = kr_agg_model_cost(&conf->models[i], tokens);

        if (best < 0 || c < *cost) {
            best = (int) i;
            *cost = c;
        }
    }

    return best;
}


static int
kr_agg_is_cheap(const kr_agg_conf_t *conf, const char *task)
{
    size_t  i;

    for (i = 0; i < conf->ncheap; i++) {
        if (strcmp(conf->cheap[i], task) == 0) {
            return 1;
        }
    }

    return 0;
}


static void
kr_agg_dim_table(kr_agg_report_t *rep, int dim, kr_agg_map_t *cur,
    kr_agg_map_t *prev, kr_u128_t total)
{
    size_t              i;
    kr_agg_row_t       *row;
    kr_agg_cell_t      *c;
    kr_agg_table_t     *t;
    kr_agg_metrics_t   *p, zero;

    memset(&zero, 0, sizeof(zero));

    t = kr_agg_table_new(kr_agg_dim_tables[dim][0],
                         kr_agg_dim_tables[dim][1], kr_agg_dim_cols[dim],
                         12);

    kr_agg_map_sort(cur, KR_AGG_M_COST);

    for (i = 0; i < cur->nrows; i++) {
        row = cur->rows[i];
        p = kr_agg_map_find(prev, row->key, row->key_len, 0);
        if (p == NULL) {
            p = &zero;
        }

        c = kr_agg_table_row(t);
        kr_agg_cell_str(&c[0], row->key, row->key_len);
        kr_agg_cell_num(&c[1], row->v.m[KR_AGG_M_REQ]);
        kr_agg_cell_num(&c[2], row->v.m[KR_AGG_M_ERR]);
        kr_agg_cell_num(&c[3], row->v.m[KR_AGG_M_IN]);
        kr_agg_cell_num(&c[4], row->v.m[KR_AGG_M_OUT]);
        kr_agg_cell_num(&c[5], row->v.m[KR_AGG_M_CACHED]);
        kr_agg_cell_num(&c[6], row->v.m[KR_AGG_M_COST]);
        kr_agg_cell_share(&c[7], row->v.m[KR_AGG_M_COST], total);
        kr_agg_cell_num(&c[8], p->m[KR_AGG_M_COST]);
        kr_agg_cell_growth(&c[9], row->v.m[KR_AGG_M_COST],
                           p->m[KR_AGG_M_COST]);
        kr_agg_cell_growth(&c[10], row->v.m[KR_AGG_M_REQ],
                           p->m[KR_AGG_M_REQ]);

        if (row->v.m[KR_AGG_M_REQ]) {
            kr_agg_cell_num(&c[11], kr_agg_div_round(row->v.m[KR_AGG_M_LAT],
                                                     row->v.m[KR_AGG_M_REQ]));
        } else {
            kr_agg_cell_null(&c[11]);
        }
    }

    kr_agg_report_add(rep, t);
}


static void
kr_agg_user_table(kr_agg_report_t *rep, kr_agg_data_t *cur,
    kr_agg_data_t *prev)
{
    size_t              i;
    kr_u128_t           total;
    kr_agg_row_t       *row;
    kr_agg_cell_t      *c;
    kr_agg_table_t     *t;
    kr_agg_metrics_t   *p, zero;

    memset(&zero, 0, sizeof(zero));
    total = 0;

    for (i = 0; i < cur->users.nrows; i++) {
        total += cur->users.rows[i]->v.m[KR_AGG_M_COST];
    }

    t = kr_agg_table_new("by_user", "Cost by user", kr_agg_user_cols,
                         KR_NCOLS(kr_agg_user_cols));

    kr_agg_map_sort(&cur->users, KR_AGG_M_COST);

    for (i = 0; i < cur->users.nrows; i++) {
        row = cur->users.rows[i];
        p = kr_agg_map_find(&prev->users, row->key, row->key_len, 0);
        if (p == NULL) {
            p = &zero;
        }

        c = kr_agg_table_row(t);
        kr_agg_cell_str(&c[0], row->key, row->key_len);
        kr_agg_cell_num(&c[1], row->v.m[KR_AGG_M_REQ]);
        kr_agg_cell_num(&c[2], row->v.m[KR_AGG_M_IN]);
        kr_agg_cell_num(&c[3], row->v.m[KR_AGG_M_OUT]);
        kr_agg_cell_num(&c[4], row->v.m[KR_AGG_M_COST]);
        kr_agg_cell_share(&c[5], row->v.m[KR_AGG_M_COST], total);
        kr_agg_cell_num(&c[6], p->m[KR_AGG_M_COST]);
        kr_agg_cell_growth(&c[7], row->v.m[KR_AGG_M_COST],
                           p->m[KR_AGG_M_COST]);
    }

    kr_agg_report_add(rep, t);
}


/* users are counted in the "ttft_ms" slot of the per-part maps */
#define KR_AGG_M_USERS  KR_AGG_M_TTFT


static void
kr_agg_fpu_table(kr_agg_report_t *rep, kr_agg_data_t *cur,
    kr_agg_data_t *prev)
{
    size_t              i;
    kr_u128_t           cpu, pcpu;
    kr_agg_map_t        cm, pm;
    kr_agg_row_t       *row;
    kr_agg_cell_t      *c;
    kr_agg_table_t     *t;
    kr_agg_metrics_t   *p;

    kr_agg_map_init(&cm);
    kr_agg_map_init(&pm);
    kr_agg_by_part(&cur->ufeat, &cm, KR_AGG_M_USERS);
    kr_agg_by_part(&prev->ufeat, &pm, KR_AGG_M_USERS);

    t = kr_agg_table_new("feature_per_user", "Cost per active user by "
                         "feature", kr_agg_fpu_cols,
                         KR_NCOLS(kr_agg_fpu_cols));

    kr_agg_map_sort(&cm, KR_AGG_M_COST);

    for (i = 0; i < cm.nrows; i++) {
        row = cm.rows[i];

        if (row->v.m[KR_AGG_M_USERS] == 0) {
            continue;
        }

        c = kr_agg_table_row(t);
        kr_agg_cell_str(&c[0], row->key, row->key_len);
        kr_agg_cell_num(&c[1], row->v.m[KR_AGG_M_USERS]);
        kr_agg_cell_num(&c[2], row->v.m[KR_AGG_M_COST]);

        cpu = kr_agg_div_round(row->v.m[KR_AGG_M_COST],
                               row->v.m[KR_AGG_M_USERS]);
        kr_agg_cell_num(&c[3], cpu);

        p = kr_agg_map_find(&pm, row->key, row->key_len, 0);

        if (p && p->m[KR_AGG_M_USERS]) {
            pcpu = kr_agg_div_round(p->m[KR_AGG_M_COST],
                                    p->m[KR_AGG_M_USERS]);
            kr_agg_cell_num(&c[4], p->m[KR_AGG_M_USERS]);
            kr_agg_cell_num(&c[5], pcpu);
            kr_agg_cell_growth(&c[6], cpu, pcpu);

        } else {
            kr_agg_cell_num(&c[4], 0);
            kr_agg_cell_null(&c[5]);
            kr_agg_cell_growth(&c[6], cpu, 0);
        }
    }

    kr_agg_report_add(rep, t);
    kr_agg_map_free(&cm);
    kr_agg_map_free(&pm);
}


static const kr_agg_plan_t *
kr_agg_plan(const kr_agg_conf_t *conf, const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < conf->nplans; i++) {
        if (strlen(conf->plans[i].name) == len
            && memcmp(conf->plans[i].name, name, len) == 0)
        {
            return &conf->plans[i];
        }
    }

    return NULL;
}


static void
kr_agg_cpu_table(kr_agg_report_t *rep, const kr_agg_conf_t *conf,
    kr_agg_data_t *cur)
{
    long                   days;
    size_t                 i;
    kr_u128_t              cpu, month, users;
    kr_agg_map_t           cm;
    kr_agg_row_t          *row;
    kr_agg_cell_t         *c;
    kr_agg_table_t        *t;
    const kr_agg_plan_t   *plan;

    days = cur->uto - cur->ufrom;

    kr_agg_map_init(&cm);
    kr_agg_by_part(&cur->ucohort, &cm, KR_AGG_M_USERS);

    t = kr_agg_table_new("cohort_per_user", "Cost per user by cohort "
                         "against the plan price (month = 30 days)",
                         kr_agg_cpu_cols, KR_NCOLS(kr_agg_cpu_cols));

    kr_agg_map_sort(&cm, -1);

    for (i = 0; days > 0 && i < cm.nrows; i++) {
        row = cm.rows[i];
        users = row->v.m[KR_AGG_M_USERS];

        if (users == 0) {
            continue;
        }

        cpu = kr_agg_div_round(row->v.m[KR_AGG_M_COST], users);
        month = kr_agg_div_round(row->v.m[KR_AGG_M_COST] * 30,
                                 users * (kr_u128_t) days);

        c = kr_agg_table_row(t);
        kr_agg_cell_str(&c[0], row->key, row->key_len);
        kr_agg_cell_num(&c[1], users);
        kr_agg_cell_num(&c[2], row->v.m[KR_AGG_M_COST]);
        kr_agg_cell_num(&c[3], cpu);
        kr_agg_cell_num(&c[4], month);

        plan = kr_agg_plan(conf, row->key, row->key_len);

        if (plan == NULL) {
            kr_agg_cell_null(&c[5]);
            kr_agg_cell_null(&c[6]);
            kr_agg_cell_null(&c[7]);
            kr_agg_cell_str(&c[8], "no plan", 7);
            continue;
        }

        kr_agg_cell_num(&c[5], plan->price);
        kr_agg_cell_num(&c[6], (kr_i128_t) plan->price - (kr_i128_t) month);
        kr_agg_cell_share(&c[7], month, plan->price);

        if (month > plan->price) {
            kr_agg_cell_str(&c[8], "over plan", 9);

        } else {
            kr_agg_cell_str(&c[8], "ok", 2);
        }
    }

    kr_agg_report_add(rep, t);
    kr_agg_map_free(&cm);
}


static void
kr_agg_cheap_table(kr_agg_report_t *rep, const kr_agg_conf_t *conf,
    kr_agg_map_t *bytask, kr_u128_t total, kr_u128_t *cheap_cost,
    kr_u128_t *saving)
{
    int                best;
    char              *task;
    size_t             i;
    kr_u128_t          routed, save;
    kr_agg_row_t      *row;
    kr_agg_cell_t     *c;
    kr_agg_table_t    *t;

    *cheap_cost = 0;
    *saving = 0;

    t = kr_agg_table_new("cheapable", "Cheap-able task types routed to the "
                         "cheapest model meeting their bar",
                         kr_agg_cheap_cols, KR_NCOLS(kr_agg_cheap_cols));

    for (i = 0; i < bytask->nrows; i++) {
        row = bytask->rows[i];
        task = kr_agg_strndup(row->key, row->key_len);

        if (!kr_agg_is_cheap(conf, task)) {
            free(task);
            continue;
        }

        c = kr_agg_table_row(t);
        kr_agg_cell_str(&c[0], row->key, row->key_len);
        kr_agg_cell_num(&c[1], row->v.m[KR_AGG_M_REQ]);
        kr_agg_cell_num(&c[2], row->v.m[KR_AGG_M_COST]);
        kr_agg_cell_share(&c[3], row->v.m[KR_AGG_M_COST], total);

        *cheap_cost += row->v.m[KR_AGG_M_COST];

        routed = 0;
        best = conf->nmodels ? kr_agg_cheapest(conf, task, &row->v, &routed)
                             : -1;
        free(task);

        if (best < 0) {
            kr_agg_cell_str(&c[4], "", 0);
            kr_agg_cell_null(&c[5]);
            kr_agg_cell_null(&c[6]);
            kr_agg_cell_null(&c[7]);
            continue;
        }

        save = routed < row->v.m[KR_AGG_M_COST]
               ? row->v.m[KR_AGG_M_COST] - routed : 0;
        *saving += save;

        kr_agg_cell_str(&c[4], conf->models[best].name,
                        strlen(conf->models[best].name));
        kr_agg_cell_num(&c[5], routed);
        kr_agg_cell_num(&c[6], save);
        kr_agg_cell_share(&c[7], save, row->v.m[KR_AGG_M_COST]);
    }

    kr_agg_report_add(rep, t);
}


static void
kr_agg_quality_table(kr_agg_report_t *rep, kr_agg_map_t *cur,
    kr_agg_map_t *prev)
{
    size_t              i;
    kr_agg_row_t       *row;
    kr_agg_cell_t      *c;
    kr_agg_table_t     *t;
    kr_agg_metrics_t   *p;

    t = kr_agg_table_new("quality", "Quality signals by model",
                         kr_agg_quality_cols, KR_NCOLS(kr_agg_quality_cols));

    kr_agg_map_sort(cur, -1);

    for (i = 0; i < cur->nrows; i++) {
        row = cur->rows[i];
        p = kr_agg_map_find(prev, row->key, row->key_len, 0);

        c = kr_agg_table_row(t);
        kr_agg_cell_str(&c[0], row->key, row->key_len);
        kr_agg_cell_num(&c[1], row->v.m[KR_AGG_M_REQ]);
        kr_agg_cell_share(&c[2], row->v.m[KR_AGG_M_ERR],
                          row->v.m[KR_AGG_M_REQ]);
        kr_agg_cell_share(&c[3], p ? p->m[KR_AGG_M_ERR] : 0,
                          p ? p->m[KR_AGG_M_REQ] : 0);
        kr_agg_cell_share(&c[4], row->v.m[KR_AGG_M_ESTIMATED],
                          row->v.m[KR_AGG_M_REQ]);
        kr_agg_cell_share(&c[5], p ? p->m[KR_AGG_M_ESTIMATED] : 0,
                          p ? p->m[KR_AGG_M_REQ] : 0);
        kr_agg_cell_share(&c[6], row->v.m[KR_AGG_M_UNPARSED],
                          row->v.m[KR_AGG_M_REQ]);

        if (row->v.m[KR_AGG_M_REQ]) {
            kr_agg_cell_num(&c[7], kr_agg_div_round(row->v.m[KR_AGG_M_OUT],
                                                    row->v.m[KR_AGG_M_REQ]));
        } else {
            kr_agg_cell_null(&c[7]);
        }

        if (p && p->m[KR_AGG_M_REQ]) {
            kr_agg_cell_num(&c[8], kr_agg_div_round(p->m[KR_AGG_M_OUT],
                                                    p->m[KR_AGG_M_REQ]));
        } else {
            kr_agg_cell_null(&c[8]);
        }
    }

    kr_agg_report_add(rep, t);
}


int
kr_agg_report_build(const kr_agg_conf_t *conf, kr_agg_data_t *cur,
    kr_agg_data_t *prev, kr_agg_report_t *rep)
{
    int                 d;
    char                a[32], b[32];
    size_t              i;
    kr_u128_t           total, cheap, saving, users;
    kr_agg_map_t        ct, pt, cd, pd, bytask;
    kr_agg_cell_t      *c;
    kr_agg_table_t     *t;
    kr_agg_metrics_t   *cv, *pv, zero;

    memset(&zero, 0, sizeof(zero));

    rep->from = cur->from;
    rep->to = cur->to;
    rep->prev_from = prev->from;
    rep->empty = cur->nhashes == 0;

    if (cur->expired) {
        kr_agg_report_note(rep, kr_agg_sprintf("%d hours of the window "
                           "belong to days whose raw buckets expired; only "
                           "whole days are kept", cur->expired));
    }

    if (cur->uto > cur->ufrom) {
        kr_agg_hour_iso(cur->ufrom * 24, a);
        kr_agg_hour_iso(cur->uto * 24, b);
        a[10] = '\0';
        b[10] = '\0';
        kr_agg_report_note(rep, kr_agg_sprintf("per-user tables cover the "
                           "whole days from %s to %s (exclusive)", a, b));

    } else {
        kr_agg_report_note(rep, kr_agg_strdup("per-user tables are empty: "
                           "the window holds no whole UTC day"));
    }

    if (rep->empty) {
        return 0;
    }

    kr_agg_map_init(&ct);
    kr_agg_map_init(&pt);
    kr_agg_by_dim(&cur->facts, -1, &ct);
    kr_agg_by_dim(&prev->facts, -1, &pt);

    cv = kr_agg_map_get(&ct, "", 0, 0);
    pv = kr_agg_map_find(&pt, "", 0, 0);
    if (pv == NULL) {
        pv = &zero;
    }

    total = cv->m[KR_AGG_M_COST];

    kr_agg_map_init(&bytask);
    kr_agg_by_dim(&cur->facts, KR_AGG_DIM_TASK, &bytask);
    kr_agg_map_sort(&bytask, KR_AGG_M_COST);

    t = kr_agg_table_new("summary", "Totals", kr_agg_summary_cols,
                         KR_NCOLS(kr_agg_summary_cols));
    kr_agg_report_add(rep, t);

    for (d = 0; d < KR_AGG_NDIMS; d++) {
        kr_agg_map_init(&cd);
        kr_agg_map_init(&pd);
        kr_agg_by_dim(&cur->facts, d, &cd);
        kr_agg_by_dim(&prev->facts, d, &pd);

        kr_agg_dim_table(rep, d, &cd, &pd, total);

        if (d == KR_AGG_DIM_MODEL) {
            kr_agg_quality_table(rep, &cd, &pd);
        }

        kr_agg_map_free(&cd);
        kr_agg_map_free(&pd);
    }

    kr_agg_user_table(rep, cur, prev);
    kr_agg_fpu_table(rep, cur, prev);
    kr_agg_cpu_table(rep, conf, cur);
    kr_agg_cheap_table(rep, conf, &bytask, total, &cheap, &saving);

    users = 0;
    for (i = 0; i < cur->users.nrows; i++) {
        if (cur->users.rows[i]->v.m[KR_AGG_M_REQ]
            || cur->users.rows[i]->v.m[KR_AGG_M_COST])
        {
            users++;
        }
    }

    c = kr_agg_table_row(t);
    kr_agg_hour_iso(cur->from, a);
    kr_agg_hour_iso(cur->to, b);
    kr_agg_cell_str(&c[0], a, strlen(a));
    kr_agg_cell_str(&c[1], b, strlen(b));
    kr_agg_cell_num(&c[2], cur->to - cur->from);
    kr_agg_cell_num(&c[3], cv->m[KR_AGG_M_REQ]);
    kr_agg_cell_num(&c[4], cv->m[KR_AGG_M_ERR]);
    kr_agg_cell_num(&c[5], cv->m[KR_AGG_M_IN]);
    kr_agg_cell_num(&c[6], cv->m[KR_AGG_M_OUT]);
    kr_agg_cell_num(&c[7], cv->m[KR_AGG_M_CACHED]);
    kr_agg_cell_num(&c[8], cv->m[KR_AGG_M_REASON]);
    kr_agg_cell_num(&c[9], total);

    if (cv->m[KR_AGG_M_REQ]) {
        kr_agg_cell_num(&c[10], kr_agg_div_round(total,
                                                 cv->m[KR_AGG_M_REQ]));
    } else {
        kr_agg_cell_null(&c[10]);
    }

    kr_agg_cell_num(&c[11], pv->m[KR_AGG_M_REQ]);
    kr_agg_cell_num(&c[12], pv->m[KR_AGG_M_COST]);
    kr_agg_cell_growth(&c[13], cv->m[KR_AGG_M_REQ], pv->m[KR_AGG_M_REQ]);
    kr_agg_cell_growth(&c[14], total, pv->m[KR_AGG_M_COST]);
    kr_agg_cell_num(&c[15], users);
    kr_agg_cell_num(&c[16], cheap);
    kr_agg_cell_share(&c[17], cheap, total);
    kr_agg_cell_num(&c[18], saving);

    kr_agg_map_free(&bytask);
    kr_agg_map_free(&ct);
    kr_agg_map_free(&pt);

    return 0;
}


void
kr_agg_report_free(kr_agg_report_t *rep)
{
    size_t  i;

    for (i = 0; i < rep->ntables; i++) {
        kr_agg_table_free(rep->tables[i]);
    }

    for (i = 0; i < rep->nnotes; i++) {
        free(rep->notes[i]);
    }

    free(rep->tables);
    free(rep->notes);
}
