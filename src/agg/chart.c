
/*
 * Copyright (C) kroute authors
 */

/*
 * Chart output of kroute-agg: one self-contained HTML page with inline
 * SVG (no script, no external resource) showing cost per task type as
 * bars, cost per feature over the window as lines, and cost per user of
 * each cohort against its plan price.  Heights are computed with integer
 * arithmetic from the same pico-USD sums the report prints.
 */


#include <stdlib.h>
#include <string.h>
#include "agg.h"


#define KR_AGG_W       720
#define KR_AGG_H       240
#define KR_AGG_LEFT    70
#define KR_AGG_BOTTOM  40


static const char  *kr_agg_colors[] = {
    "#3b6fb6", "#d9822b", "#3a9a5b", "#b33c3c", "#7d5ba6", "#8c6d46",
    "#cf5fa6", "#6f6f6f", "#a8a82f", "#2fa8b8"
};

#define KR_AGG_NCOLORS  (sizeof(kr_agg_colors) / sizeof(kr_agg_colors[0]))


static void
kr_agg_html(FILE *f, const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        switch (s[i]) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\x1f':
            fputc(' ', f);
            break;
        default:
            fputc(s[i], f);
        }
    }
}


static void
kr_agg_html_name(FILE *f, const char *s)
{
    if (s == NULL || s[0] == '\0') {
        fputs("(none)", f);
        return;
    }

    kr_agg_html(f, s, strlen(s));
}


static const kr_agg_table_t *
kr_agg_find_table(const kr_agg_report_t *rep, const char *name)
{
    size_t  i;

    for (i = 0; i < rep->ntables; i++) {
        if (strcmp(rep->tables[i]->name, name) == 0) {
            return rep->tables[i];
        }
    }

    return NULL;
}


static long
kr_agg_scale(kr_u128_t v, kr_u128_t max, long px)
{
    if (max == 0) {
        return 0;
    }

    return (long) kr_agg_div_round(v * (kr_u128_t) px, max);
}


static void
kr_agg_task_bars(FILE *f, const kr_agg_table_t *t)
{
    long        x, w, h, gap;
    char        usd[64];
    size_t      i;
    kr_u128_t   max, v;

    fprintf(f, "<h2>Cost per task type</h2>\n");

    if (t == NULL || t->nrows == 0) {
        fprintf(f, "<p class=\"empty\">no requests</p>\n");
        return;
    }

    max = 0;
    for (i = 0; i < t->nrows; i++) {
        v = (kr_u128_t) t->cells[i * t->ncols + 6].n;
        if (v > max) {
            max = v;
        }
    }

    gap = (KR_AGG_W - KR_AGG_LEFT) / (long) t->nrows;
    w = gap * 2 / 3;

    fprintf(f, "<svg id=\"task-bars\" xmlns=\"http://www.w3.org/2000/svg\" "
            "width=\"%d\" height=\"%d\" role=\"img\">\n", KR_AGG_W,
            KR_AGG_H + KR_AGG_BOTTOM);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" "
            "class=\"axis\"/>\n", KR_AGG_LEFT, KR_AGG_H, KR_AGG_W, KR_AGG_H);
    kr_agg_usd_str((kr_i128_t) max, usd);
    fprintf(f, "<text x=\"4\" y=\"24\" class=\"tick\">%s</text>\n", usd);

    for (i = 0; i < t->nrows; i++) {
        v = (kr_u128_t) t->cells[i * t->ncols + 6].n;
        h = kr_agg_scale(v, max, KR_AGG_H - 20);
        x = KR_AGG_LEFT + (long) i * gap + (gap - w) / 2;
        kr_agg_usd_str((kr_i128_t) v, usd);

        fprintf(f, "<rect class=\"bar\" data-task=\"");
        kr_agg_html_name(f, t->cells[i * t->ncols].s);
        fprintf(f, "\" data-cost-micro-usd=\"%lld\" x=\"%ld\" y=\"%ld\" "
                "width=\"%ld\" height=\"%ld\" fill=\"%s\"><title>",
                (long long) (v / KR_AGG_PICO_PER_MICRO), x,
                KR_AGG_H - h, w, h, kr_agg_colors[i % KR_AGG_NCOLORS]);
        kr_agg_html_name(f, t->cells[i * t->ncols].s);
        fprintf(f, ": %s USD</title></rect>\n", usd);

        fprintf(f, "<text class=\"bar-value\" x=\"%ld\" y=\"%ld\" "
                "text-anchor=\"middle\">%s</text>\n", x + w / 2,
                KR_AGG_H - h - 4, usd);
        fprintf(f, "<text class=\"bar-label\" x=\"%ld\" y=\"%d\" "
                "text-anchor=\"middle\">", x + w / 2, KR_AGG_H + 16);
        kr_agg_html_name(f, t->cells[i * t->ncols].s);
        fprintf(f, "</text>\n");
    }

    fprintf(f, "</svg>\n");
}


static void
kr_agg_feature_lines(FILE *f, kr_agg_data_t *cur, long slot_hours)
{
    int                 nslots, s;
    long                x, y, step;
    char                usd[64], iso[32];
    size_t              i, k, len, nfeat;
    kr_u128_t           max, v;
    const char         *sep;
    kr_agg_row_t       *row;
    kr_agg_map_t        feats, series;
    kr_agg_metrics_t   *m;

    nslots = (int) ((cur->to - cur->from + slot_hours - 1) / slot_hours);

    kr_agg_map_init(&feats);
    kr_agg_map_init(&series);

    for (i = 0; i < cur->facts.nrows; i++) {
        row = cur->facts.rows[i];
        sep = memchr(row->key, KR_AGG_SEP, row->key_len);
        len = sep ? (size_t) (sep - row->key) : row->key_len;

        m = kr_agg_map_get(&feats, row->key, len, 0);
        m->m[KR_AGG_M_COST] += row->v.m[KR_AGG_M_COST];

        m = kr_agg_map_get(&series, row->key, len, row->slot);
        m->m[KR_AGG_M_COST] += row->v.m[KR_AGG_M_COST];
    }

    kr_agg_map_sort(&feats, KR_AGG_M_COST);

    fprintf(f, "<h2>Cost per feature over time (per %s)</h2>\n",
            slot_hours == 24 ? "day" : "hour");

    max = 0;
    for (i = 0; i < series.nrows; i++) {
        if (series.rows[i]->v.m[KR_AGG_M_COST] > max) {
            max = series.rows[i]->v.m[KR_AGG_M_COST];
        }
    }

    nfeat = feats.nrows;
    step = nslots > 1 ? (KR_AGG_W - KR_AGG_LEFT - 20) / (nslots - 1) : 0;

    fprintf(f, "<svg id=\"feature-lines\" xmlns=\"http://www.w3.org/2000/svg\""
            " width=\"%d\" height=\"%ld\" role=\"img\">\n", KR_AGG_W,
            KR_AGG_H + KR_AGG_BOTTOM + (long) nfeat * 16);
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" "
            "class=\"axis\"/>\n", KR_AGG_LEFT, KR_AGG_H, KR_AGG_W, KR_AGG_H);
    kr_agg_usd_str((kr_i128_t) max, usd);
    fprintf(f, "<text x=\"4\" y=\"24\" class=\"tick\">%s</text>\n", usd);

    for (s = 0; s < nslots; s += nslots > 8 ? nslots / 8 : 1) {
        kr_agg_hour_iso(cur->from + (long) s * slot_hours, iso);
        iso[slot_hours == 24 ? 10 : 16] = '\0';
        if (slot_hours != 24) {
            iso[10] = ' ';
        }
        fprintf(f, "<text class=\"x-label\" x=\"%ld\" y=\"%d\" "
                "text-anchor=\"middle\">%s</text>\n",
                KR_AGG_LEFT + (long) s * step, KR_AGG_H + 16,
                slot_hours == 24 || cur->to - cur->from > 24
                ? iso + 5 : iso + 11);
    }

    for (k = 0; k < nfeat; k++) {
        row = feats.rows[k];

        fprintf(f, "<polyline class=\"line\" fill=\"none\" stroke=\"%s\" "
                "stroke-width=\"2\" data-feature=\"",
                kr_agg_colors[k % KR_AGG_NCOLORS]);
        kr_agg_html(f, row->key, row->key_len);
        fprintf(f, "\" points=\"");

        for (s = 0; s < nslots; s++) {
            m = kr_agg_map_find(&series, row->key, row->key_len, s);
            v = m ? m->m[KR_AGG_M_COST] : 0;
            x = KR_AGG_LEFT + (long) s * step;
            y = KR_AGG_H - kr_agg_scale(v, max, KR_AGG_H - 20);
            fprintf(f, "%s%ld,%ld", s ? " " : "", x, y);
        }

        fprintf(f, "\"/>\n");

        kr_agg_usd_str((kr_i128_t) row->v.m[KR_AGG_M_COST], usd);
        fprintf(f, "<text class=\"legend\" x=\"%d\" y=\"%ld\" fill=\"%s\">",
                KR_AGG_LEFT, KR_AGG_H + 36 + (long) k * 16,
                kr_agg_colors[k % KR_AGG_NCOLORS]);
        if (row->key_len) {
            kr_agg_html(f, row->key, row->key_len);
        } else {
            fputs("(none)", f);
        }
        fprintf(f, " %s USD</text>\n", usd);
    }

    fprintf(f, "</svg>\n");

    kr_agg_map_free(&feats);
    kr_agg_map_free(&series);
}


static void
kr_agg_cohort_bars(FILE *f, const kr_agg_table_t *t)
{
    long        y, w, px;
    char        usd[64], plan[64];
    size_t      i;
    kr_u128_t   max, v, p;

    fprintf(f, "<h2>Cost per user per month by cohort, against the plan "
            "price</h2>\n");

    if (t == NULL || t->nrows == 0) {
        fprintf(f, "<p class=\"empty\">no per-cohort user data</p>\n");
        return;
    }

    max = 0;
    for (i = 0; i < t->nrows; i++) {
        v = (kr_u128_t) t->cells[i * t->ncols + 4].n;
        p = t->cells[i * t->ncols + 5].null
            ? 0 : (kr_u128_t) t->cells[i * t->ncols + 5].n;
        if (v > max) {
            max = v;
        }
        if (p > max) {
            max = p;
        }
    }

    fprintf(f, "<svg id=\"cohort-bars\" xmlns=\"http://www.w3.org/2000/svg\" "
            "width=\"%d\" height=\"%ld\" role=\"img\">\n", KR_AGG_W,
            (long) t->nrows * 34 + 20);

    for (i = 0; i < t->nrows; i++) {
        v = (kr_u128_t) t->cells[i * t->ncols + 4].n;
        y = 10 + (long) i * 34;
        w = kr_agg_scale(v, max, KR_AGG_W - 300);
        kr_agg_usd_str((kr_i128_t) v, usd);

        fprintf(f, "<text class=\"cohort-label\" x=\"4\" y=\"%ld\">", y + 16);
        kr_agg_html_name(f, t->cells[i * t->ncols].s);
        fprintf(f, "</text>\n");

        fprintf(f, "<rect class=\"cohort-bar\" data-cohort=\"");
        kr_agg_html_name(f, t->cells[i * t->ncols].s);
        fprintf(f, "\" data-cost-per-user-micro-usd=\"%lld\" x=\"120\" "
                "y=\"%ld\" width=\"%ld\" height=\"22\" fill=\"%s\"/>\n",
                (long long) (v / KR_AGG_PICO_PER_MICRO), y, w,
                strcmp(t->cells[i * t->ncols + 8].s, "over plan") == 0
                ? "#b33c3c" : "#3a9a5b");

        plan[0] = '\0';
        px = 0;

        if (!t->cells[i * t->ncols + 5].null) {
            p = (kr_u128_t) t->cells[i * t->ncols + 5].n;
            px = 120 + kr_agg_scale(p, max, KR_AGG_W - 300);
            fprintf(f, "<line class=\"plan-line\" x1=\"%ld\" y1=\"%ld\" "
                    "x2=\"%ld\" y2=\"%ld\" stroke=\"#000\" "
                    "stroke-width=\"2\"/>\n", px, y - 3, px, y + 25);
            kr_agg_usd_str((kr_i128_t) p, plan);
        }

        /* the value goes right of both the bar and the plan mark */
        px = px > 120 + w ? px : 120 + w;

        fprintf(f, "<text class=\"cohort-value\" x=\"%ld\" y=\"%ld\">%s USD"
                "%s%s</text>\n", px + 8, y + 16, usd,
                plan[0] ? " / plan " : "", plan);
    }

    fprintf(f, "</svg>\n<p class=\"tick\">bar: cost per active user "
            "per 30 days; black mark: the cohort's plan price</p>\n");
}


int
kr_agg_chart(FILE *f, const kr_agg_conf_t *conf, kr_agg_data_t *cur,
    const kr_agg_report_t *rep, long slot_hours)
{
    char                   a[32], b[32], usd[64];
    const kr_agg_table_t  *sum;

    (void) conf;

    kr_agg_hour_iso(rep->from, a);
    kr_agg_hour_iso(rep->to, b);

    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
            "<meta charset=\"utf-8\">\n<title>kroute cost report %s .. %s"
            "</title>\n<style>\n"
            "body { font-family: sans-serif; margin: 24px; color: #222; }\n"
            "h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }"
            "\n.axis { stroke: #888; } text { font-size: 12px; }\n"
            ".tick { fill: #666; } .empty { color: #888; }\n"
            "table.sum td { padding: 2px 12px 2px 0; }\n"
            "</style>\n</head>\n<body>\n", a, b);

    fprintf(f, "<h1>kroute cost report</h1>\n<p id=\"window\">%s .. %s "
            "(UTC)</p>\n", a, b);

    if (rep->empty) {
        fprintf(f, "<p class=\"empty\" id=\"no-data\">no data in window</p>"
                "\n</body>\n</html>\n");
        return ferror(f) ? -1 : 0;
    }

    sum = kr_agg_find_table(rep, "summary");

    if (sum && sum->nrows == 1) {
        kr_agg_usd_str(sum->cells[9].n, usd);
        fprintf(f, "<table class=\"sum\"><tr><td>total cost</td>"
                "<td id=\"total-cost\">%s USD</td></tr>\n", usd);
        kr_agg_u128_str((kr_u128_t) sum->cells[3].n, usd);
        fprintf(f, "<tr><td>requests</td><td>%s</td></tr>\n", usd);

        if (!sum->cells[18].null) {
            kr_agg_usd_str(sum->cells[18].n, usd);
            fprintf(f, "<tr><td>saving if cheap-able tasks were routed to "
                    "the cheapest model meeting their bar</td><td>%s USD"
                    "</td></tr>\n", usd);
        }

        fprintf(f, "</table>\n");
    }

    kr_agg_task_bars(f, kr_agg_find_table(rep, "by_task"));
    kr_agg_feature_lines(f, cur, slot_hours);
    kr_agg_cohort_bars(f, kr_agg_find_table(rep, "cohort_per_user"));

    fprintf(f, "</body>\n</html>\n");

    return ferror(f) ? -1 : 0;
}
