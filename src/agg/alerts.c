
/*
 * Copyright (C) kroute authors
 */

/*
 * Alerts of kroute-agg, comparing a window with the one before it: cost
 * growing faster than usage (cost per request up more than a threshold,
 * in total, per feature and per model), provider error rate spikes, and
 * output quality shifts per model (share of requests with estimated
 * usage, with errors, or left unparsed).  Ratios are compared as integer
 * cross products, never as floats.
 */


#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "agg.h"


typedef struct {
    kr_agg_alert_t        *v;
    size_t                 n;
} kr_agg_alerts_t;


static void
kr_agg_alert(kr_agg_alerts_t *a, const char *kind, const char *subject,
    size_t len, char *message)
{
    a->v = realloc(a->v, (a->n + 1) * sizeof(kr_agg_alert_t));
    if (a->v == NULL) {
        kr_agg_die_oom();
    }

    a->v[a->n].kind = kind;
    a->v[a->n].subject = kr_agg_strndup(subject, len);
    a->v[a->n++].message = message;
}


static void
kr_agg_alert_cpr(const kr_agg_conf_t *conf, kr_agg_alerts_t *a,
    const char *what, kr_agg_map_t *cur, kr_agg_map_t *prev)
{
    char               subj[512], c1[64], c2[64], g[32];
    size_t             i;
    kr_u128_t          cc, cr, pc, pr, ccpr, pcpr;
    kr_agg_row_t      *row;
    kr_agg_metrics_t  *p;

    kr_agg_map_sort(cur, -1);

    for (i = 0; i < cur->nrows; i++) {
        row = cur->rows[i];
        p = kr_agg_map_find(prev, row->key, row->key_len, 0);
        if (p == NULL) {
            continue;
        }

        cc = row->v.m[KR_AGG_M_COST];
        cr = row->v.m[KR_AGG_M_REQ];
        pc = p->m[KR_AGG_M_COST];
        pr = p->m[KR_AGG_M_REQ];

        if (cr < (kr_u128_t) conf->alert_min_requests
            || pr < (kr_u128_t) conf->alert_min_requests || cr == 0
            || pr == 0 || pc == 0)
        {
            continue;
        }

        /* cc/cr > pc/pr * (1 + X) */
        if (cc * pr * 10000
            <= pc * cr * (kr_u128_t) (10000 + conf->alert_cpr_growth_bp))
        {
            continue;
        }

        ccpr = kr_agg_div_round(cc, cr);
        pcpr = kr_agg_div_round(pc, pr);
        kr_agg_usd_str((kr_i128_t) ccpr, c1);
        kr_agg_usd_str((kr_i128_t) pcpr, c2);
        kr_agg_pct_str(kr_agg_growth_bp(cc * pr, pc * cr), 1, g);

        if (what) {
            snprintf(subj, sizeof(subj), "%s=%.*s", what,
                     (int) row->key_len, row->key);
        } else {
            snprintf(subj, sizeof(subj), "total");
        }

        kr_agg_alert(a, "cost_per_request", subj, strlen(subj),
                     kr_agg_sprintf("cost per request %s USD vs %s USD in "
                                    "the previous window (%s), more than "
                                    "the %d.%02d%% allowed", c1, c2, g,
                                    conf->alert_cpr_growth_bp / 100,
                                    conf->alert_cpr_growth_bp % 100));
    }
}


static void
kr_agg_alert_errors(const kr_agg_conf_t *conf, kr_agg_alerts_t *a,
    kr_agg_map_t *cur, kr_agg_map_t *prev)
{
    char               subj[512], r1[32], r2[32], n1[48], n2[48];
    size_t             i;
    kr_u128_t          ce, cr, pe, pr, rate, prate;
    kr_agg_row_t      *row;
    kr_agg_metrics_t  *p;

    kr_agg_map_sort(cur, -1);

    for (i = 0; i < cur->nrows; i++) {
        row = cur->rows[i];
        p = kr_agg_map_find(prev, row->key, row->key_len, 0);

        ce = row->v.m[KR_AGG_M_ERR];
        cr = row->v.m[KR_AGG_M_REQ];
        pe = p ? p->m[KR_AGG_M_ERR] : 0;
        pr = p ? p->m[KR_AGG_M_REQ] : 0;

        if (cr == 0 || cr < (kr_u128_t) conf->alert_min_requests) {
            continue;
        }

        rate = kr_agg_div_round(ce * 10000, cr);
        prate = pr ? kr_agg_div_round(pe * 10000, pr) : 0;

        /* over the floor, and a spike against the previous window */
        if (ce * 10000 < cr * (kr_u128_t) conf->alert_error_rate_bp
            || (pe && pr
                && ce * pr < pe * cr * (kr_u128_t) conf->alert_error_factor))
        {
            continue;
        }

        kr_agg_pct_str((kr_i128_t) rate, 0, r1);
        kr_agg_pct_str((kr_i128_t) prate, 0, r2);
        snprintf(subj, sizeof(subj), "provider=%.*s", (int) row->key_len,
                 row->key);

        kr_agg_alert(a, "provider_error_rate", subj, strlen(subj),
                     kr_agg_sprintf("error rate %s (%s of %s requests) vs "
                                    "%s in the previous window", r1,
                                    kr_agg_u128_str(ce, n1),
                                    kr_agg_u128_str(cr, n2), r2));
    }
}


static void
kr_agg_alert_shift(const kr_agg_conf_t *conf, kr_agg_alerts_t *a,
    kr_agg_map_t *cur, kr_agg_map_t *prev)
{
    int                 k, metric;
    char                subj[512], s1[32], s2[32];
    size_t              i;
    kr_i128_t           cs, ps, d;
    kr_agg_row_t       *row;
    kr_agg_metrics_t   *p;
    static const int    metrics[3] = {
        KR_AGG_M_ESTIMATED, KR_AGG_M_ERR, KR_AGG_M_UNPARSED
    };
    static const char  *kinds[3] = {
        "estimated_share", "model_error_rate", "unparsed_share"
    };
    static const char  *what[3] = {
        "requests with estimated usage", "requests with errors",
        "unparsed requests"
    };

    kr_agg_map_sort(cur, -1);

    for (i = 0; i < cur->nrows; i++) {
        row = cur->rows[i];
        p = kr_agg_map_find(prev, row->key, row->key_len, 0);

        if (p == NULL
            || row->v.m[KR_AGG_M_REQ] == 0 || p->m[KR_AGG_M_REQ] == 0
            || row->v.m[KR_AGG_M_REQ] < (kr_u128_t) conf->alert_min_requests
            || p->m[KR_AGG_M_REQ] < (kr_u128_t) conf->alert_min_requests)
        {
            continue;
        }

        for (k = 0; k < 3; k++) {
            metric = metrics[k];
            cs = (kr_i128_t) kr_agg_div_round(row->v.m[metric] * 10000,
                                              row->v.m[KR_AGG_M_REQ]);
            ps = (kr_i128_t) kr_agg_div_round(p->m[metric] * 10000,
                                              p->m[KR_AGG_M_REQ]);
            d = cs - ps;

            if ((d < 0 ? -d : d) < conf->alert_shift_bp || d == 0) {
                continue;
            }

            kr_agg_pct_str(cs, 0, s1);
            kr_agg_pct_str(ps, 0, s2);
            snprintf(subj, sizeof(subj), "model=%.*s", (int) row->key_len,
                     row->key);

            kr_agg_alert(a, kinds[k], subj, strlen(subj),
                         kr_agg_sprintf("share of %s %s %s from %s in the "
                                        "previous window", what[k],
                                        d > 0 ? "up to" : "down to", s1,
                                        s2));
        }
    }
}


int
kr_agg_alerts(const kr_agg_conf_t *conf, kr_agg_data_t *cur,
    kr_agg_data_t *prev, kr_agg_alert_t **alerts, size_t *n)
{
    int              d;
    kr_agg_map_t     cm, pm;
    kr_agg_alerts_t  a;

    memset(&a, 0, sizeof(a));

    for (d = -1; d < KR_AGG_NDIMS; d++) {
        if (d != -1 && d != KR_AGG_DIM_FEATURE && d != KR_AGG_DIM_MODEL
            && d != KR_AGG_DIM_PROVIDER)
        {
            continue;
        }

        kr_agg_map_init(&cm);
        kr_agg_map_init(&pm);
        kr_agg_by_dim(&cur->facts, d, &cm);
        kr_agg_by_dim(&prev->facts, d, &pm);

        switch (d) {

        case -1:
            kr_agg_alert_cpr(conf, &a, NULL, &cm, &pm);
            break;

        case KR_AGG_DIM_FEATURE:
            kr_agg_alert_cpr(conf, &a, "feature", &cm, &pm);
            break;

        case KR_AGG_DIM_MODEL:
            kr_agg_alert_cpr(conf, &a, "model", &cm, &pm);
            kr_agg_alert_shift(conf, &a, &cm, &pm);
            break;

        default:
            kr_agg_alert_errors(conf, &a, &cm, &pm);
            break;
        }

        kr_agg_map_free(&cm);
        kr_agg_map_free(&pm);
    }

    *alerts = a.v;
    *n = a.n;

    return 0;
}


int
kr_agg_alerts_print(FILE *f, kr_agg_alert_t *alerts, size_t n, int json,
    const kr_agg_data_t *cur)
{
    int      rc;
    char     a[32];
    size_t   i;
    json_t  *root, *arr, *o;

    if (!json) {
        for (i = 0; i < n; i++) {
            fprintf(f, "ALERT %s %s: %s\n", alerts[i].kind,
                    alerts[i].subject, alerts[i].message);
        }

        return ferror(f) ? -1 : 0;
    }

    root = json_object();
    arr = json_array();
    if (root == NULL || arr == NULL) {
        kr_agg_die_oom();
    }

    kr_agg_hour_iso(cur->from, a);
    json_object_set_new(root, "from", json_string(a));
    kr_agg_hour_iso(cur->to, a);
    json_object_set_new(root, "to", json_string(a));

    for (i = 0; i < n; i++) {
        o = json_pack("{s:s, s:s, s:s}", "kind", alerts[i].kind,
                      "subject", alerts[i].subject,
                      "message", alerts[i].message);
        if (o == NULL || json_array_append_new(arr, o) != 0) {
            kr_agg_die_oom();
        }
    }

    json_object_set_new(root, "alerts", arr);

    rc = json_dumpf(root, f, JSON_INDENT(2));
    fputc('\n', f);
    json_decref(root);

    return rc || ferror(f) ? -1 : 0;
}


void
kr_agg_alerts_free(kr_agg_alert_t *alerts, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(alerts[i].subject);
        free(alerts[i].message);
    }

    free(alerts);
}
