
/*
 * Copyright (C) kroute authors
 */

/*
 * Configuration of kroute-agg: its own line-based config file (Redis
 * address, retention, cheap-able tasks, quality bars, plan prices, alert
 * thresholds) and the module's model catalog, read from the same
 * "kroute_model" directive lines nginx reads, for prices and quality.
 */


#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <errno.h>
#include "agg.h"


#define KR_AGG_MAX_ARGS  64


static char *
kr_agg_read_file(const char *path, const char *what)
{
    long    size;
    FILE   *f;
    char   *buf;

    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "kroute-agg: cannot open %s \"%s\": %s\n",
                what, path, strerror(errno));
        return NULL;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        fprintf(stderr, "kroute-agg: cannot read %s \"%s\"\n", what, path);
        fclose(f);
        return NULL;
    }

    buf = kr_agg_alloc((size_t) size + 1);

    if (fread(buf, 1, (size_t) size, f) != (size_t) size) {
        fprintf(stderr, "kroute-agg: cannot read %s \"%s\"\n", what, path);
        free(buf);
        fclose(f);
        return NULL;
    }

    buf[size] = '\0';
    fclose(f);

    return buf;
}


int
kr_agg_parse_duration(const char *s, long *hours)
{
    char  *end;
    long   n;

    errno = 0;
    n = strtol(s, &end, 10);

    if (errno || end == s || n < 0 || n > 1000000) {
        return -1;
    }

    if (strcmp(end, "h") == 0) {
        *hours = n;

    } else if (strcmp(end, "d") == 0) {
        *hours = n * 24;

    } else {
        return -1;
    }

    return 0;
}


/* "20%", "20", "12.5%" -> basis points */
static int
kr_agg_parse_bp(const char *s, int *bp)
{
    char       buf[32];
    size_t     len;
    kr_u128_t  v;

    len = strlen(s);
    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }

    memcpy(buf, s, len + 1);
    if (buf[len - 1] == '%') {
        buf[len - 1] = '\0';
    }

    if (kr_agg_parse_usd(buf, 2, &v) != 0 || v > (kr_u128_t) 1000000
        * KR_AGG_PICO_PER_USD)
    {
        return -1;
    }

    *bp = (int) (v / (KR_AGG_PICO_PER_USD / 100));

    return 0;
}


static int
kr_agg_parse_int(const char *s, long max, long *v)
{
    char  *end;

    errno = 0;
    *v = strtol(s, &end, 10);

    return (errno || end == s || *end || *v < 0 || *v > max) ? -1 : 0;
}


static int
kr_agg_conf_line(kr_agg_conf_t *conf, char **a, int n)
{
    int         bp;
    long        v;
    char       *colon;
    size_t      i;
    kr_u128_t   price;

#define KR_NARGS(lo, hi)  if (n < (lo) || n > (hi)) return -1

    if (strcmp(a[0], "redis") == 0) {
        KR_NARGS(2, 2);
        colon = strrchr(a[1], ':');
        if (colon == NULL || kr_agg_parse_int(colon + 1, 65535, &v) != 0
            || v == 0 || colon == a[1])
        {
            return -1;
        }
        free(conf->redis_host);
        conf->redis_host = kr_agg_strndup(a[1], (size_t) (colon - a[1]));
        conf->redis_port = (int) v;

    } else if (strcmp(a[0], "redis_password_file") == 0) {
        KR_NARGS(2, 2);
        free(conf->redis_password_file);
        conf->redis_password_file = kr_agg_strdup(a[1]);

    } else if (strcmp(a[0], "redis_db") == 0) {
        KR_NARGS(2, 2);
        if (kr_agg_parse_int(a[1], 1000000, &v) != 0) {
            return -1;
        }
        conf->redis_db = (int) v;

    } else if (strcmp(a[0], "timeout") == 0) {
        KR_NARGS(2, 2);
        if (strlen(a[1]) > 2 && strcmp(a[1] + strlen(a[1]) - 2, "ms") == 0)
        {
            a[1][strlen(a[1]) - 2] = '\0';
            if (kr_agg_parse_int(a[1], 600000, &v) != 0) {
                return -1;
            }

        } else if (a[1][0] && a[1][strlen(a[1]) - 1] == 's') {
            a[1][strlen(a[1]) - 1] = '\0';
            if (kr_agg_parse_int(a[1], 600, &v) != 0) {
                return -1;
            }
            v *= 1000;

        } else {
            return -1;
        }
        if (v == 0) {
            return -1;
        }
        conf->timeout_ms = (int) v;

    } else if (strcmp(a[0], "prefix") == 0) {
        KR_NARGS(2, 2);
        free(conf->prefix);
        conf->prefix = kr_agg_strdup(a[1]);

    } else if (strcmp(a[0], "catalog") == 0) {
        KR_NARGS(2, 2);
        free(conf->catalog);
        conf->catalog = kr_agg_strdup(a[1]);

    } else if (strcmp(a[0], "retention") == 0) {
        KR_NARGS(2, 2);
        if (kr_agg_parse_duration(a[1], &conf->retention_hours) != 0) {
            return -1;
        }

    } else if (strcmp(a[0], "final_after") == 0) {
        KR_NARGS(2, 2);
        if (kr_agg_parse_duration(a[1], &conf->final_after_hours) != 0) {
            return -1;
        }

    } else if (strcmp(a[0], "cheap_task") == 0) {
        KR_NARGS(2, KR_AGG_MAX_ARGS);
        conf->cheap = realloc(conf->cheap,
                              (conf->ncheap + n) * sizeof(char *));
        if (conf->cheap == NULL) {
            kr_agg_die_oom();
        }
        for (i = 1; i < (size_t) n; i++) {
            conf->cheap[conf->ncheap++] = kr_agg_strdup(a[i]);
        }

    } else if (strcmp(a[0], "quality_bar") == 0) {
        KR_NARGS(3, 3);
        if (kr_agg_parse_int(a[2], 100, &v) != 0) {
            return -1;
        }
        if (strcmp(a[1], "default") == 0) {
            conf->default_bar = (int) v;
            return 0;
        }
        conf->bars = realloc(conf->bars,
                             (conf->nbars + 1) * sizeof(kr_agg_bar_t));
        if (conf->bars == NULL) {
            kr_agg_die_oom();
        }
        conf->bars[conf->nbars].task = kr_agg_strdup(a[1]);
        conf->bars[conf->nbars++].bar = (int) v;

    } else if (strcmp(a[0], "plan") == 0) {
        KR_NARGS(3, 3);
        if (kr_agg_parse_usd(a[2], 6, &price) != 0) {
            return -1;
        }
        conf->plans = realloc(conf->plans,
                              (conf->nplans + 1) * sizeof(kr_agg_plan_t));
        if (conf->plans == NULL) {
            kr_agg_die_oom();
        }
        conf->plans[conf->nplans].name = kr_agg_strdup(a[1]);
        conf->plans[conf->nplans++].price = price;

    } else if (strcmp(a[0], "alert_cost_per_request") == 0) {
        KR_NARGS(2, 2);
        if (kr_agg_parse_bp(a[1], &conf->alert_cpr_growth_bp) != 0) {
            return -1;
        }

    } else if (strcmp(a[0], "alert_error_rate") == 0) {
        KR_NARGS(2, 2);
        if (kr_agg_parse_bp(a[1], &conf->alert_error_rate_bp) != 0) {
            return -1;
        }

    } else if (strcmp(a[0], "alert_error_factor") == 0) {
        KR_NARGS(2, 2);
        if (kr_agg_parse_int(a[1], 1000, &v) != 0 || v < 1) {
            return -1;
        }
        conf->alert_error_factor = (int) v;

    } else if (strcmp(a[0], "alert_quality_shift") == 0) {
        KR_NARGS(2, 2);
        if (kr_agg_parse_bp(a[1], &bp) != 0) {
            return -1;
        }
        conf->alert_shift_bp = bp;

    } else if (strcmp(a[0], "alert_min_requests") == 0) {
        KR_NARGS(2, 2);
        if (kr_agg_parse_int(a[1], 1000000000, &conf->alert_min_requests)
            != 0)
        {
            return -1;
        }

    } else {
        return -2;
    }

#undef KR_NARGS

    return 0;
}


int
kr_agg_conf_load(kr_agg_conf_t *conf, const char *path)
{
    int    n, line, rc;
    char  *buf, *p, *eol, *a[KR_AGG_MAX_ARGS + 1];

    buf = kr_agg_read_file(path, "config");
    if (buf == NULL) {
        return -1;
    }

    line = 0;
    rc = 0;

    for (p = buf; p && *p; p = eol) {
        line++;

        eol = strchr(p, '\n');
        if (eol) {
            *eol++ = '\0';
        }

        if (strchr(p, '#')) {
            *strchr(p, '#') = '\0';
        }

        n = 0;

        for ( ;; ) {
            while (*p && isspace((unsigned char) *p)) {
                *p++ = '\0';
            }

            if (*p == '\0') {
                break;
            }

            if (n == KR_AGG_MAX_ARGS) {
                n++;
                break;
            }

            a[n++] = p;

            while (*p && !isspace((unsigned char) *p)) {
                p++;
            }
        }

        if (n == 0) {
            continue;
        }

        if (n > KR_AGG_MAX_ARGS) {
            fprintf(stderr, "kroute-agg: too many values in \"%s\" in %s:%d"
                    "\n", a[0], path, line);
            rc = -1;
            break;
        }

        switch (kr_agg_conf_line(conf, a, n)) {
        case 0:
            break;

        case -2:
            fprintf(stderr, "kroute-agg: unknown directive \"%s\" in %s:%d"
                    "\n", a[0], path, line);
            rc = -1;
            break;

        default:
            fprintf(stderr, "kroute-agg: invalid value in \"%s\" in %s:%d"
                    "\n", a[0], path, line);
            rc = -1;
        }

        if (rc) {
            break;
        }
    }

    free(buf);

    return rc;
}


static int
kr_agg_parse_price(const char *s, uint64_t *v)
{
    kr_u128_t  pico;

    if (kr_agg_parse_usd(s, 6, &pico) != 0) {
        return -1;
    }

    /* USD per 1M tokens == micro-USD per token * 10^6 == pico per token */
    pico /= 1000000;

    if (pico > UINT64_MAX) {
        return -1;
    }

    *v = (uint64_t) pico;

    return 0;
}


static int
kr_agg_parse_quality(kr_agg_model_t *m, char *s)
{
    long   v;
    char  *item, *next, *colon;

    for (item = s; item && *item; item = next) {
        next = strchr(item, ',');
        if (next) {
            *next++ = '\0';
        }

        colon = strrchr(item, ':');
        if (colon == NULL || colon == item) {
            return -1;
        }

        *colon = '\0';

        if (kr_agg_parse_int(colon + 1, 100, &v) != 0) {
            return -1;
        }

        if (strcmp(item, "default") == 0) {
            m->quality_default = (int) v;
            continue;
        }

        m->quality_task = realloc(m->quality_task,
                                  (m->nquality + 1) * sizeof(char *));
        m->quality_score = realloc(m->quality_score,
                                   (m->nquality + 1) * sizeof(int));
        if (m->quality_task == NULL || m->quality_score == NULL) {
            kr_agg_die_oom();
        }

        m->quality_task[m->nquality] = kr_agg_strdup(item);
        m->quality_score[m->nquality++] = (int) v;
    }

    return 0;
}


static void
kr_agg_model_free(kr_agg_model_t *m)
{
    size_t  i;

    for (i = 0; i < m->nquality; i++) {
        free(m->quality_task[i]);
    }

    free(m->quality_task);
    free(m->quality_score);
    free(m->name);
    free(m->provider);
}


static int
kr_agg_catalog_model(kr_agg_conf_t *conf, char **a, int n)
{
    int              i, have_in, have_out;
    char            *eq;
    kr_agg_model_t   m;

    memset(&m, 0, sizeof(kr_agg_model_t));

    if (n < 2) {
        return -1;
    }

    m.name = kr_agg_strdup(a[1]);
    have_in = 0;
    have_out = 0;

    for (i = 2; i < n; i++) {
        eq = strchr(a[i], '=');
        if (eq == NULL) {
            goto failed;
        }

        *eq++ = '\0';

        if (strcmp(a[i], "provider") == 0) {
            free(m.provider);
            m.provider = kr_agg_strdup(eq);

        } else if (strcmp(a[i], "input") == 0) {
            if (kr_agg_parse_price(eq, &m.input) != 0) {
                goto failed;
            }
            have_in = 1;

        } else if (strcmp(a[i], "output") == 0) {
            if (kr_agg_parse_price(eq, &m.output) != 0) {
                goto failed;
            }
            have_out = 1;

        } else if (strcmp(a[i], "cached") == 0) {
            if (kr_agg_parse_price(eq, &m.cached) != 0) {
                goto failed;
            }
            m.has_cached = 1;

        } else if (strcmp(a[i], "cache_write") == 0) {
            if (kr_agg_parse_price(eq, &m.cache_write) != 0) {
                goto failed;
            }
            m.has_cw = 1;

        } else if (strcmp(a[i], "quality") == 0) {
            if (kr_agg_parse_quality(&m, eq) != 0) {
                goto failed;
            }

        } else if (strcmp(a[i], "alias") != 0
                   && strcmp(a[i], "output_tokens") != 0)
        {
            goto failed;
        }
    }

    if (!have_in || !have_out || m.provider == NULL) {
        goto failed;
    }

    conf->models = realloc(conf->models,
                           (conf->nmodels + 1) * sizeof(kr_agg_model_t));
    if (conf->models == NULL) {
        kr_agg_die_oom();
    }

    conf->models[conf->nmodels++] = m;

    return 0;

failed:

    kr_agg_model_free(&m);

    return -1;
}


/*
 * The catalog is nginx configuration: statements end with ";", "{" or
 * "}", "#" starts a comment; only "kroute_model" statements are read.
 */
int
kr_agg_catalog_load(kr_agg_conf_t *conf, const char *path)
{
    int    n, line, start, rc;
    char  *buf, *p, *a[KR_AGG_MAX_ARGS];

    buf = kr_agg_read_file(path, "catalog");
    if (buf == NULL) {
        return -1;
    }

    n = 0;
    line = 1;
    start = 1;
    rc = 0;

    for (p = buf; *p; ) {
        if (*p == '#') {
            while (*p && *p != '\n') {
                *p++ = '\0';
            }
            continue;
        }

        if (isspace((unsigned char) *p)) {
            line += *p == '\n';
            *p++ = '\0';
            continue;
        }

        if (*p == ';' || *p == '{' || *p == '}') {
            *p++ = '\0';

            if (n > 0 && strcmp(a[0], "kroute_model") == 0
                && kr_agg_catalog_model(conf, a, n) != 0)
            {
                fprintf(stderr, "kroute-agg: invalid \"kroute_model\" in "
                        "catalog %s:%d\n", path, start);
                rc = -1;
                break;
            }

            n = 0;
            continue;
        }

        if (n == 0) {
            start = line;
        }

        if (n == KR_AGG_MAX_ARGS) {
            fprintf(stderr, "kroute-agg: statement too long in catalog "
                    "%s:%d\n", path, start);
            rc = -1;
            break;
        }

        a[n++] = p;

        while (*p && !isspace((unsigned char) *p) && *p != ';'
               && *p != '{' && *p != '}' && *p != '#')
        {
            p++;
        }
    }

    if (rc == 0 && n > 0 && strcmp(a[0], "kroute_model") == 0) {
        fprintf(stderr, "kroute-agg: unterminated \"kroute_model\" in "
                "catalog %s:%d\n", path, start);
        rc = -1;
    }

    if (rc == 0 && conf->nmodels == 0) {
        fprintf(stderr, "kroute-agg: no \"kroute_model\" in catalog %s\n",
                path);
        rc = -1;
    }

    free(buf);

    return rc;
}


void
kr_agg_conf_free(kr_agg_conf_t *conf)
{
    size_t  i;

    for (i = 0; i < conf->ncheap; i++) {
        free(conf->cheap[i]);
    }

    for (i = 0; i < conf->nbars; i++) {
        free(conf->bars[i].task);
    }

    for (i = 0; i < conf->nplans; i++) {
        free(conf->plans[i].name);
    }

    for (i = 0; i < conf->nmodels; i++) {
        kr_agg_model_free(&conf->models[i]);
    }

    free(conf->cheap);
    free(conf->bars);
    free(conf->plans);
    free(conf->models);
    free(conf->redis_host);
    free(conf->redis_password_file);
    free(conf->prefix);
    free(conf->catalog);
}


int
kr_agg_quality(const kr_agg_model_t *model, const char *task)
{
    size_t  i;

    for (i = 0; i < model->nquality; i++) {
        if (strcmp(model->quality_task[i], task) == 0) {
            return model->quality_score[i];
        }
    }

    return model->quality_default;
}


int
kr_agg_bar(const kr_agg_conf_t *conf, const char *task)
{
    size_t  i;

    for (i = 0; i < conf->nbars; i++) {
        if (strcmp(conf->bars[i].task, task) == 0) {
            return conf->bars[i].bar;
        }
    }

    return conf->default_bar;
}
