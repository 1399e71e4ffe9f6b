
/*
 * Copyright (C) kroute authors
 */

/*
 * Command line of kroute-agg: options, the report window, the commands
 * (rollup, report, chart, alerts) and the exit codes a cron job needs:
 * 0 done (also when the window holds no data, which is said), 1 alerts
 * fired with --fail, 2 usage or bad window, 3 config or catalog, 4 Redis
 * unreachable, 5 Redis command failed, 6 output not written.
 */


#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <stddef.h>
#include "agg.h"


#define KR_AGG_VERSION     "0.1.0"
#define KR_AGG_MAX_WINDOW  (400 * 24)


typedef struct {
    const char            *command;
    const char            *config;
    const char            *redis;
    const char            *prefix;
    const char            *timeout;
    const char            *catalog;
    const char            *now;
    const char            *from;
    const char            *to;
    const char            *last;
    const char            *day;
    const char            *month;
    const char            *format;
    const char            *table;
    const char            *output;
    int                    fail;
    int                    verbose;
} kr_agg_args_t;


static void
kr_agg_usage(FILE *f)
{
    fprintf(f,
        "usage: kroute-agg [options] rollup|report|chart|alerts\n"
        "\n"
        "  -c, --config FILE      kroute-agg config file\n"
        "      --redis HOST:PORT  Redis address (default 127.0.0.1:6379)\n"
        "      --prefix P         key prefix of the module (kroute:)\n"
        "      --timeout MS       connect and command timeout (2000)\n"
        "      --catalog FILE     model catalog (kroute_model lines)\n"
        "      --now TIME         act as if it were TIME (UTC)\n"
        "      --from TIME        window start, inclusive\n"
        "      --to TIME          window end, exclusive (default: now)\n"
        "      --last N(h|d)      window of N hours or days before --to\n"
        "      --day YYYY-MM-DD   one UTC day\n"
        "      --month YYYY-MM    one UTC month\n"
        "      --format F         text, json or csv (report, alerts)\n"
        "      --table NAME       only this table (csv)\n"
        "  -o, --output FILE      write to FILE (atomically) not stdout\n"
        "      --fail             alerts: exit 1 when an alert fires\n"
        "  -v, --verbose          say what was done\n"
        "\n"
        "TIME is YYYY-MM-DD, YYYY-MM-DDTHH[:MM[:SS]][Z] or @EPOCH; the\n"
        "default window is the previous whole UTC day.\n");
}


static int
kr_agg_parse_args(int argc, char **argv, kr_agg_args_t *a)
{
    int          i;
    char        *eq;
    size_t       k, len;
    const char  *name, *val, **slot;

    static const struct {
        const char  *name;
        size_t       off;
    } opts[] = {
        { "config", offsetof(kr_agg_args_t, config) },
        { "redis", offsetof(kr_agg_args_t, redis) },
        { "prefix", offsetof(kr_agg_args_t, prefix) },
        { "timeout", offsetof(kr_agg_args_t, timeout) },
        { "catalog", offsetof(kr_agg_args_t, catalog) },
        { "now", offsetof(kr_agg_args_t, now) },
        { "from", offsetof(kr_agg_args_t, from) },
        { "to", offsetof(kr_agg_args_t, to) },
        { "last", offsetof(kr_agg_args_t, last) },
        { "day", offsetof(kr_agg_args_t, day) },
        { "month", offsetof(kr_agg_args_t, month) },
        { "format", offsetof(kr_agg_args_t, format) },
        { "table", offsetof(kr_agg_args_t, table) },
        { "output", offsetof(kr_agg_args_t, output) }
    };

    for (i = 1; i < argc; i++) {
        name = argv[i];

        if (name[0] != '-') {
            if (a->command) {
                fprintf(stderr, "kroute-agg: unexpected argument \"%s\"\n",
                        name);
                return -1;
            }
            a->command = name;
            continue;
        }

        if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
            kr_agg_usage(stdout);
            exit(0);
        }

        if (strcmp(name, "--version") == 0) {
            printf("kroute-agg " KR_AGG_VERSION "\n");
            exit(0);
        }

        if (strcmp(name, "--fail") == 0) {
            a->fail = 1;
            continue;
        }

        if (strcmp(name, "-v") == 0 || strcmp(name, "--verbose") == 0) {
            a->verbose = 1;
            continue;
        }

        if (strcmp(name, "-c") == 0) {
            name = "--config";
        } else if (strcmp(name, "-o") == 0) {
            name = "--output";
        }

        if (name[1] != '-') {
            fprintf(stderr, "kroute-agg: unknown option \"%s\"\n", argv[i]);
            return -1;
        }

        name += 2;
        eq = strchr(name, '=');
        len = eq ? (size_t) (eq - name) : strlen(name);

        for (k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
            if (strlen(opts[k].name) == len
                && strncmp(opts[k].name, name, len) == 0)
            {
                break;
            }
        }

        if (k == sizeof(opts) / sizeof(opts[0])) {
            fprintf(stderr, "kroute-agg: unknown option \"%s\"\n", argv[i]);
            return -1;
        }

        if (eq) {
            val = eq + 1;

        } else if (i + 1 < argc) {
            val = argv[++i];

        } else {
            fprintf(stderr, "kroute-agg: option \"%s\" needs a value\n",
                    argv[i]);
            return -1;
        }

        slot = (const char **) ((char *) a + opts[k].off);
        *slot = val;
    }

    if (a->command == NULL) {
        fprintf(stderr, "kroute-agg: no command given\n");
        return -1;
    }

    if (strcmp(a->command, "rollup") != 0 && strcmp(a->command, "report")
        && strcmp(a->command, "chart") && strcmp(a->command, "alerts"))
    {
        fprintf(stderr, "kroute-agg: unknown command \"%s\"\n", a->command);
        return -1;
    }

    if (a->format && strcmp(a->format, "text") && strcmp(a->format, "json")
        && strcmp(a->format, "csv"))
    {
        fprintf(stderr, "kroute-agg: unknown format \"%s\"\n", a->format);
        return -1;
    }

    return 0;
}


static int
kr_agg_window(const kr_agg_args_t *a, long now, long *from, long *to)
{
    int    n;
    long   len, y, m;

    n = (a->from != NULL) + (a->last != NULL) + (a->day != NULL)
        + (a->month != NULL);

    if (n > 1 || ((a->day || a->month) && a->to)) {
        fprintf(stderr, "kroute-agg: bad window: use one of --from/--to, "
                "--last, --day, --month\n");
        return -1;
    }

    if (a->to) {
        if (kr_agg_parse_time(a->to, to) != 0) {
            fprintf(stderr, "kroute-agg: bad window: cannot parse --to "
                    "\"%s\"\n", a->to);
            return -1;
        }

    } else {
        *to = now;
    }

    if (a->from) {
        if (kr_agg_parse_time(a->from, from) != 0) {
            fprintf(stderr, "kroute-agg: bad window: cannot parse --from "
                    "\"%s\"\n", a->from);
            return -1;
        }

    } else if (a->last) {
        if (kr_agg_parse_duration(a->last, &len) != 0 || len == 0) {
            fprintf(stderr, "kroute-agg: bad window: cannot parse --last "
                    "\"%s\" (want N h or N d)\n", a->last);
            return -1;
        }
        *from = *to - len;

    } else if (a->day) {
        if (strlen(a->day) != 10 || kr_agg_parse_time(a->day, from) != 0) {
            fprintf(stderr, "kroute-agg: bad window: cannot parse --day "
                    "\"%s\" (want YYYY-MM-DD)\n", a->day);
            return -1;
        }
        *to = *from + 24;

    } else if (a->month) {
        if (strlen(a->month) != 7 || kr_agg_parse_time(a->month, from) != 0)
        {
            fprintf(stderr, "kroute-agg: bad window: cannot parse --month "
                    "\"%s\" (want YYYY-MM)\n", a->month);
            return -1;
        }
        y = atol(a->month);
        m = atol(a->month + 5);
        *to = 24 * (m == 12 ? kr_agg_days_from_civil(y + 1, 1, 1)
                            : kr_agg_days_from_civil(y, m + 1, 1));

    } else if (a->to) {
        fprintf(stderr, "kroute-agg: bad window: --to needs --from or "
                "--last\n");
        return -1;

    } else {
        /* the previous whole UTC day */
        *to = now / 24 * 24;
        *from = *to - 24;
    }

    if (*from >= *to) {
        fprintf(stderr, "kroute-agg: bad window: start is not before end\n");
        return -1;
    }

    if (*to - *from > KR_AGG_MAX_WINDOW) {
        fprintf(stderr, "kroute-agg: bad window: longer than %d days\n",
                KR_AGG_MAX_WINDOW / 24);
        return -1;
    }

    return 0;
}


static int
kr_agg_setup(kr_agg_conf_t *conf, const kr_agg_args_t *a)
{
    long   v;
    char  *colon, *end;

    conf->redis_host = kr_agg_strdup("127.0.0.1");
    conf->redis_port = 6379;
    conf->timeout_ms = 2000;
    conf->prefix = kr_agg_strdup("kroute:");
    conf->retention_hours = 7 * 24;
    conf->final_after_hours = 48;
    conf->alert_cpr_growth_bp = 2000;
    conf->alert_error_rate_bp = 500;
    conf->alert_error_factor = 2;
    conf->alert_shift_bp = 500;
    conf->alert_min_requests = 20;

    if (a->config && kr_agg_conf_load(conf, a->config) != 0) {
        return KR_AGG_EXIT_CONFIG;
    }

    if (a->redis) {
        colon = strrchr(a->redis, ':');
        v = colon ? strtol(colon + 1, &end, 10) : 0;

        if (colon == NULL || colon == a->redis || *end || v <= 0
            || v > 65535)
        {
            fprintf(stderr, "kroute-agg: bad --redis \"%s\" (want HOST:PORT)"
                    "\n", a->redis);
            return KR_AGG_EXIT_USAGE;
        }

        free(conf->redis_host);
        conf->redis_host = kr_agg_strndup(a->redis,
                                          (size_t) (colon - a->redis));
        conf->redis_port = (int) v;
    }

    if (a->timeout) {
        errno = 0;
        v = strtol(a->timeout, &end, 10);
        if (errno || *end || v <= 0 || v > 600000) {
            fprintf(stderr, "kroute-agg: bad --timeout \"%s\" (want ms)\n",
                    a->timeout);
            return KR_AGG_EXIT_USAGE;
        }
        conf->timeout_ms = (int) v;
    }

    if (a->prefix) {
        free(conf->prefix);
        conf->prefix = kr_agg_strdup(a->prefix);
    }

    if (a->catalog) {
        free(conf->catalog);
        conf->catalog = kr_agg_strdup(a->catalog);
    }

    if (conf->retention_hours < conf->final_after_hours) {
        fprintf(stderr, "kroute-agg: \"retention\" must not be shorter than "
                "\"final_after\"\n");
        return KR_AGG_EXIT_CONFIG;
    }

    if (conf->catalog && strcmp(a->command, "rollup") != 0
        && kr_agg_catalog_load(conf, conf->catalog) != 0)
    {
        return KR_AGG_EXIT_CONFIG;
    }

    return 0;
}


static FILE *
kr_agg_open_output(const char *path, char **tmp)
{
    FILE  *f;

    *tmp = NULL;

    if (path == NULL || strcmp(path, "-") == 0) {
        return stdout;
    }

    *tmp = kr_agg_sprintf("%s.tmp.%ld", path, (long) getpid());

    f = fopen(*tmp, "w");
    if (f == NULL) {
        fprintf(stderr, "kroute-agg: cannot write \"%s\": %s\n", *tmp,
                strerror(errno));
        free(*tmp);
        *tmp = NULL;
    }

    return f;
}


static int
kr_agg_close_output(FILE *f, const char *path, char *tmp, int ok)
{
    int  rc;

    rc = 0;

    if (f == stdout) {
        if (fflush(stdout) != 0 || !ok) {
            fprintf(stderr, "kroute-agg: cannot write output\n");
            rc = KR_AGG_EXIT_OUTPUT;
        }
        return rc;
    }

    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "kroute-agg: cannot write \"%s\"\n", tmp);
        unlink(tmp);
        rc = KR_AGG_EXIT_OUTPUT;

    } else if (rename(tmp, path) != 0) {
        fprintf(stderr, "kroute-agg: cannot rename \"%s\" to \"%s\": %s\n",
                tmp, path, strerror(errno));
        unlink(tmp);
        rc = KR_AGG_EXIT_OUTPUT;
    }

    free(tmp);

    return rc;
}


int
main(int argc, char **argv)
{
    int               rc, ok, json;
    long              now, from, to, slot_hours;
    char              a[32], b[32], *tmp;
    FILE             *out;
    size_t            nalerts;
    redisContext     *c;
    kr_agg_conf_t     conf;
    kr_agg_args_t     args;
    kr_agg_data_t     cur, prev;
    kr_agg_alert_t   *alerts;
    kr_agg_report_t   rep;

    memset(&args, 0, sizeof(args));
    memset(&conf, 0, sizeof(conf));
    memset(&rep, 0, sizeof(rep));
    memset(&cur, 0, sizeof(cur));
    memset(&prev, 0, sizeof(prev));
    c = NULL;

    if (kr_agg_parse_args(argc, argv, &args) != 0) {
        kr_agg_usage(stderr);
        return KR_AGG_EXIT_USAGE;
    }

    if (args.now) {
        if (kr_agg_parse_time(args.now, &now) != 0) {
            fprintf(stderr, "kroute-agg: cannot parse --now \"%s\"\n",
                    args.now);
            return KR_AGG_EXIT_USAGE;
        }

    } else {
        now = (long) (time(NULL) / 3600);
    }

    rc = kr_agg_setup(&conf, &args);
    if (rc != 0) {
        goto done;
    }

    from = 0;
    to = 0;

    if (strcmp(args.command, "rollup") != 0
        && kr_agg_window(&args, now, &from, &to) != 0)
    {
        rc = KR_AGG_EXIT_USAGE;
        goto done;
    }

    c = kr_agg_redis_connect(&conf);
    if (c == NULL) {
        rc = KR_AGG_EXIT_CONNECT;
        goto done;
    }

    if (strcmp(args.command, "rollup") == 0) {
        rc = kr_agg_rollup(c, &conf, now, args.verbose);
        goto done;
    }

    slot_hours = to - from > 48 ? 24 : 1;

    rc = kr_agg_load(c, &conf, &cur, from, to, slot_hours);
    if (rc == 0) {
        rc = kr_agg_load(c, &conf, &prev, from - (to - from), from,
                         slot_hours);
    }

    if (rc != 0) {
        goto done;
    }

    kr_agg_report_build(&conf, &cur, &prev, &rep);

    if (conf.ncheap && conf.nmodels == 0) {
        kr_agg_report_note(&rep, kr_agg_strdup("no model catalog given: "
                           "savings of cheap-able tasks are not computed"));
    }

    kr_agg_hour_iso(from, a);
    kr_agg_hour_iso(to, b);
    json = args.format && strcmp(args.format, "json") == 0;

    if (strcmp(args.command, "alerts") == 0) {
        if (rep.empty) {
            printf("kroute-agg: no data in window %s .. %s\n", a, b);
            goto done;
        }

        kr_agg_alerts(&conf, &cur, &prev, &alerts, &nalerts);

        out = kr_agg_open_output(args.output, &tmp);
        if (out == NULL) {
            kr_agg_alerts_free(alerts, nalerts);
            rc = KR_AGG_EXIT_OUTPUT;
            goto done;
        }

        if (nalerts || json) {
            ok = kr_agg_alerts_print(out, alerts, nalerts, json, &cur) == 0;

        } else {
            ok = 1;
            if (args.verbose) {
                fprintf(out, "kroute-agg: no alerts for window %s .. %s\n",
                        a, b);
            }
        }

        rc = kr_agg_close_output(out, args.output, tmp, ok);
        if (rc == 0 && nalerts && args.fail) {
            rc = KR_AGG_EXIT_ALERTS;
        }

        kr_agg_alerts_free(alerts, nalerts);
        goto done;
    }

    if (rep.empty && !json) {
        /* said once, on stdout for text, on stderr beside csv and html */
        fprintf((args.format && strcmp(args.format, "csv") == 0)
                || strcmp(args.command, "chart") == 0 ? stderr : stdout,
                "kroute-agg: no data in window %s .. %s\n", a, b);

        if (strcmp(args.command, "report") == 0 && args.output == NULL
            && (args.format == NULL || strcmp(args.format, "text") == 0))
        {
            goto done;
        }
    }

    out = kr_agg_open_output(args.output, &tmp);
    if (out == NULL) {
        rc = KR_AGG_EXIT_OUTPUT;
        goto done;
    }

    if (strcmp(args.command, "chart") == 0) {
        ok = kr_agg_chart(out, &conf, &cur, &rep, slot_hours) == 0;

    } else if (json) {
        ok = kr_agg_output_json(out, &rep) == 0;

    } else if (args.format && strcmp(args.format, "csv") == 0) {
        ok = kr_agg_output_csv(out, &rep, args.table) == 0;

    } else {
        ok = kr_agg_output_text(out, &rep) == 0;
    }

    rc = kr_agg_close_output(out, args.output, tmp, ok);

done:

    if (c) {
        redisFree(c);
    }

    kr_agg_report_free(&rep);
    kr_agg_data_free(&cur);
    kr_agg_data_free(&prev);
    kr_agg_conf_free(&conf);

    return rc;
}
