
/*
 * Copyright (C) kroute authors
 */

/*
 * Output formats of kroute-agg reports: aligned text tables for people
 * and cron mail, JSON (money as integer micro-USD plus a fixed-decimal
 * USD string, ratios in basis points) for programs, and CSV for
 * spreadsheets.  All three render the same tables.
 */


#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "agg.h"


#define KR_AGG_CELL_MAX  1024


static void
kr_agg_cell_text(const kr_agg_cell_t *c, char *buf, int csv)
{
    kr_u128_t  a;

    if (c->type == KR_AGG_C_STR) {
        snprintf(buf, KR_AGG_CELL_MAX, "%s",
                 c->s && c->s[0] ? c->s : (csv ? "" : "(none)"));
        return;
    }

    if (c->null) {
        snprintf(buf, KR_AGG_CELL_MAX, "%s",
                 c->s && c->s[0] ? c->s : (csv ? "" : "-"));
        return;
    }

    switch (c->type) {

    case KR_AGG_C_INT:
        a = c->n < 0 ? (kr_u128_t) (-c->n) : (kr_u128_t) c->n;
        if (c->n < 0) {
            *buf++ = '-';
        }
        kr_agg_u128_str(a, buf);
        break;

    case KR_AGG_C_MONEY:
        kr_agg_usd_str(c->n, buf);
        break;

    case KR_AGG_C_PCT:
        kr_agg_pct_str(c->n, 0, buf);
        break;

    default:
        kr_agg_pct_str(c->n, 1, buf);
        break;
    }
}


static void
kr_agg_col_title(const kr_agg_col_t *col, char *buf)
{
    snprintf(buf, KR_AGG_CELL_MAX, "%s%s", col->name,
             col->type == KR_AGG_C_MONEY ? "_usd" : "");
}


static int
kr_agg_text_table(FILE *f, const kr_agg_table_t *t)
{
    char     buf[KR_AGG_CELL_MAX];
    size_t   i, j, w, *width;

    fprintf(f, "%s\n", t->title);

    if (t->nrows == 0) {
        fprintf(f, "  (no rows)\n\n");
        return 0;
    }

    if (strcmp(t->name, "summary") == 0) {
        for (j = 0; j < t->ncols; j++) {
            kr_agg_col_title(&t->cols[j], buf);
            fprintf(f, "  %-22s ", buf);
            kr_agg_cell_text(&t->cells[j], buf, 0);
            fprintf(f, "%s\n", buf);
        }

        fprintf(f, "\n");
        return 0;
    }

    width = kr_agg_alloc(t->ncols * sizeof(size_t));

    for (j = 0; j < t->ncols; j++) {
        kr_agg_col_title(&t->cols[j], buf);
        width[j] = strlen(buf);

        for (i = 0; i < t->nrows; i++) {
            kr_agg_cell_text(&t->cells[i * t->ncols + j], buf, 0);
            w = strlen(buf);
            if (w > width[j]) {
                width[j] = w;
            }
        }
    }

    for (i = 0; i <= t->nrows; i++) {
        fprintf(f, " ");

        for (j = 0; j < t->ncols; j++) {
            if (i == 0) {
                kr_agg_col_title(&t->cols[j], buf);

            } else {
                kr_agg_cell_text(&t->cells[(i - 1) * t->ncols + j], buf, 0);
            }

            if (t->cols[j].type == KR_AGG_C_STR) {
                fprintf(f, " %-*s", j + 1 < t->ncols ? (int) width[j] : 0,
                        buf);

            } else {
                fprintf(f, " %*s", (int) width[j], buf);
            }
        }

        fprintf(f, "\n");
    }

    fprintf(f, "\n");
    free(width);

    return 0;
}


int
kr_agg_output_text(FILE *f, const kr_agg_report_t *rep)
{
    char    a[32], b[32], p[32];
    size_t  i;

    kr_agg_hour_iso(rep->from, a);
    kr_agg_hour_iso(rep->to, b);
    kr_agg_hour_iso(rep->prev_from, p);

    if (rep->empty) {
        fprintf(f, "kroute-agg: no data in window %s .. %s\n", a, b);
        return ferror(f) ? -1 : 0;
    }

    fprintf(f, "kroute report %s .. %s (UTC), previous window from %s\n\n",
            a, b, p);

    for (i = 0; i < rep->ntables; i++) {
        kr_agg_text_table(f, rep->tables[i]);
    }

    for (i = 0; i < rep->nnotes; i++) {
        fprintf(f, "note: %s\n", rep->notes[i]);
    }

    return ferror(f) ? -1 : 0;
}


static json_t *
kr_agg_json_int(kr_i128_t n)
{
    if (n > (kr_i128_t) INT64_MAX || n < (kr_i128_t) INT64_MIN) {
        return json_null();
    }

    return json_integer((json_int_t) n);
}


static void
kr_agg_json_set(json_t *o, const char *key, json_t *v)
{
    if (v == NULL || json_object_set_new(o, key, v) != 0) {
        kr_agg_die_oom();
    }
}


static json_t *
kr_agg_json_row(const kr_agg_table_t *t, const kr_agg_cell_t *row)
{
    char           key[128], buf[KR_AGG_CELL_MAX];
    size_t         j;
    json_t        *o;
    kr_i128_t      micro;
    const char    *name;

    o = json_object();
    if (o == NULL) {
        kr_agg_die_oom();
    }

    for (j = 0; j < t->ncols; j++) {
        name = t->cols[j].name;

        switch (t->cols[j].type) {

        case KR_AGG_C_STR:
            kr_agg_json_set(o, name, json_string(row[j].s ? row[j].s : ""));
            break;

        case KR_AGG_C_INT:
            kr_agg_json_set(o, name, row[j].null ? json_null()
                                     : kr_agg_json_int(row[j].n));
            break;

        case KR_AGG_C_MONEY:
            snprintf(key, sizeof(key), "%s_micro_usd", name);

            if (row[j].null) {
                kr_agg_json_set(o, key, json_null());
                snprintf(key, sizeof(key), "%s_usd", name);
                kr_agg_json_set(o, key, json_null());
                break;
            }

            micro = row[j].n / (kr_i128_t) KR_AGG_PICO_PER_MICRO;
            kr_agg_json_set(o, key, kr_agg_json_int(micro));

            snprintf(key, sizeof(key), "%s_usd", name);
            kr_agg_usd_str(row[j].n, buf);
            kr_agg_json_set(o, key, json_string(buf));
            break;

        default:
            snprintf(key, sizeof(key), "%s_bp", name);
            kr_agg_json_set(o, key, row[j].null ? json_null()
                                    : kr_agg_json_int(row[j].n));
            break;
        }
    }

    return o;
}


int
kr_agg_output_json(FILE *f, const kr_agg_report_t *rep)
{
    int              rc;
    char             a[32];
    size_t           i, r;
    json_t          *root, *win, *tables, *arr, *notes;
    kr_agg_table_t  *t;

    root = json_object();
    win = json_object();
    tables = json_object();
    notes = json_array();

    if (root == NULL || win == NULL || tables == NULL || notes == NULL) {
        kr_agg_die_oom();
    }

    kr_agg_hour_iso(rep->from, a);
    kr_agg_json_set(win, "from", json_string(a));
    kr_agg_hour_iso(rep->to, a);
    kr_agg_json_set(win, "to", json_string(a));
    kr_agg_json_set(win, "hours", json_integer(rep->to - rep->from));
    kr_agg_hour_iso(rep->prev_from, a);
    kr_agg_json_set(win, "previous_from", json_string(a));

    kr_agg_json_set(root, "window", win);
    kr_agg_json_set(root, "empty", json_boolean(rep->empty));

    if (rep->empty) {
        kr_agg_json_set(root, "message", json_string("no data in window"));
    }

    for (i = 0; i < rep->nnotes; i++) {
        if (json_array_append_new(notes, json_string(rep->notes[i])) != 0) {
            kr_agg_die_oom();
        }
    }

    kr_agg_json_set(root, "notes", notes);

    for (i = 0; i < rep->ntables; i++) {
        t = rep->tables[i];

        if (strcmp(t->name, "summary") == 0 && t->nrows == 1) {
            kr_agg_json_set(tables, t->name, kr_agg_json_row(t, t->cells));
            continue;
        }

        arr = json_array();
        if (arr == NULL) {
            kr_agg_die_oom();
        }

        for (r = 0; r < t->nrows; r++) {
            if (json_array_append_new(arr, kr_agg_json_row(t,
                                      &t->cells[r * t->ncols])) != 0)
            {
                kr_agg_die_oom();
            }
        }

        kr_agg_json_set(tables, t->name, arr);
    }

    kr_agg_json_set(root, "tables", tables);

    rc = json_dumpf(root, f, JSON_INDENT(2)) == 0 ? 0 : -1;
    fputc('\n', f);
    json_decref(root);

    return rc || ferror(f) ? -1 : 0;
}


static void
kr_agg_csv_field(FILE *f, const char *s)
{
    if (strpbrk(s, ",\"\r\n\x1f") == NULL) {
        fputs(s, f);
        return;
    }

    fputc('"', f);

    for ( ; *s; s++) {
        if (*s == '"') {
            fputc('"', f);
        }
        fputc(*s, f);
    }

    fputc('"', f);
}


int
kr_agg_output_csv(FILE *f, const kr_agg_report_t *rep, const char *only)
{
    int                   first;
    char                  buf[KR_AGG_CELL_MAX];
    size_t                i, r, j;
    const kr_agg_table_t  *t;

    first = 1;

    for (i = 0; i < rep->ntables; i++) {
        t = rep->tables[i];

        if (only && strcmp(only, t->name) != 0) {
            continue;
        }

        if (!first) {
            fputc('\n', f);
        }

        first = 0;

        fputs("table", f);
        for (j = 0; j < t->ncols; j++) {
            kr_agg_col_title(&t->cols[j], buf);
            fputc(',', f);
            kr_agg_csv_field(f, buf);
        }
        fputs("\n", f);

        for (r = 0; r < t->nrows; r++) {
            fputs(t->name, f);

            for (j = 0; j < t->ncols; j++) {
                kr_agg_cell_text(&t->cells[r * t->ncols + j], buf, 1);
                fputc(',', f);
                kr_agg_csv_field(f, buf);
            }

            fputs("\n", f);
        }
    }

    return ferror(f) ? -1 : 0;
}
