
/*
 * Copyright (C) kroute authors
 */

/*
 * Rollup of kroute-agg.  A day total is recomputed from all closed hour
 * buckets of all instances, written to a temporary key and renamed over
 * the day key inside MULTI/EXEC under WATCH of the day's meta and raw
 * keys, so repeated or concurrent runs converge on the same value.  Raw
 * buckets of a day are deleted only in the transaction that writes the
 * final total they were folded into; buckets that arrive later for an
 * expired day are added to it and deleted in one transaction as well.
 * Month totals are recomputed from the day totals the same way.
 */


#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "agg.h"


#define KR_AGG_HSET_CHUNK  256
#define KR_AGG_RETRIES     8


typedef struct {
    char                 **v;
    size_t                 n;
    size_t                 cap;
} kr_agg_keys_t;


static const char  *kr_agg_kinds[4] = { "d", "ud", "ufd", "ucd" };


static void
kr_agg_keys_add(kr_agg_keys_t *k, char *s)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->v = realloc(k->v, k->cap * sizeof(char *));
        if (k->v == NULL) {
            kr_agg_die_oom();
        }
    }

    k->v[k->n++] = s;
}


static void
kr_agg_keys_free(kr_agg_keys_t *k)
{
    kr_agg_free_strings(k->v, k->n);
    memset(k, 0, sizeof(kr_agg_keys_t));
}


/* reply must be simple status or integer; frees it */
static int
kr_agg_simple(redisContext *c, redisReply *r, const char *what)
{
    if (kr_agg_redis_failed(c, r, what)) {
        return -1;
    }

    freeReplyObject(r);

    return 0;
}


static int
kr_agg_flush_hset(redisContext *c, const char **argv, size_t *lens,
    size_t *argc)
{
    redisReply  *r;

    r = redisCommandArgv(c, (int) *argc, argv, lens);

    while (*argc > 2) {
        *argc -= 2;
        free((void *) argv[*argc]);
    }

    return kr_agg_simple(c, r, "HSET");
}


/* writes a map as a hash at key (fields "<key>|<metric>"), in chunks */
static int
kr_agg_write_hash(redisContext *c, const char *key, kr_agg_map_t *map)
{
    int            mi, rc;
    char          *bufs;
    size_t         i, n, argc, *lens;
    const char   **argv;

    argv = kr_agg_alloc((2 + 2 * KR_AGG_HSET_CHUNK) * sizeof(char *));
    lens = kr_agg_alloc((2 + 2 * KR_AGG_HSET_CHUNK) * sizeof(size_t));
    bufs = kr_agg_alloc(KR_AGG_HSET_CHUNK * 48);

    argv[0] = "HSET";
    lens[0] = 4;
    argv[1] = key;
    lens[1] = strlen(key);
    argc = 2;
    n = 0;
    rc = 0;

    for (i = 0; rc == 0 && i < map->nrows; i++) {
        for (mi = 0; rc == 0 && mi < KR_AGG_NMETRICS; mi++) {
            if (map->rows[i]->v.m[mi] == 0) {
                continue;
            }

            argv[argc] = kr_agg_sprintf("%.*s|%s",
                                        (int) map->rows[i]->key_len,
                                        map->rows[i]->key,
                                        kr_agg_metric_name(mi));
            lens[argc] = strlen(argv[argc]);
            argc++;

            argv[argc] = kr_agg_u128_str(map->rows[i]->v.m[mi],
                                         bufs + n * 48);
            lens[argc] = strlen(argv[argc]);
            argc++;

            if (++n == KR_AGG_HSET_CHUNK) {
                rc = kr_agg_flush_hset(c, argv, lens, &argc);
                n = 0;
            }
        }
    }

    if (rc == 0 && n > 0) {
        rc = kr_agg_flush_hset(c, argv, lens, &argc);
    }

    while (argc > 2) {
        argc -= 2;
        free((void *) argv[argc]);
    }

    free(bufs);
    free(lens);
    free(argv);

    return rc;
}


static int
kr_agg_read_into(redisContext *c, kr_agg_keys_t *keys, kr_agg_map_t *map,
    int *found)
{
    int          rc;
    size_t       i;
    redisReply  *r;

    for (i = 0; i < keys->n; i++) {
        redisAppendCommand(c, "HGETALL %s", keys->v[i]);
    }

    rc = 0;

    for (i = 0; i < keys->n; i++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (kr_agg_redis_failed(c, r, "HGETALL")) {
            return -1;
        }

        if (rc == 0 && r->type == REDIS_REPLY_ARRAY && r->elements) {
            if (found) {
                (*found)++;
            }
            rc = kr_agg_hash_add(map, r, 0, 1);
        }

        freeReplyObject(r);
    }

    return rc;
}


static int
kr_agg_watch(redisContext *c, kr_agg_keys_t *keys)
{
    size_t        i, argc;
    const char  **argv;
    redisReply   *r;

    if (keys->n == 0) {
        return 0;
    }

    argv = kr_agg_alloc((keys->n + 1) * sizeof(char *));
    argv[0] = "WATCH";
    argc = 1;

    for (i = 0; i < keys->n; i++) {
        argv[argc++] = keys->v[i];
    }

    r = redisCommandArgv(c, (int) argc, argv, NULL);
    free(argv);

    return kr_agg_simple(c, r, "WATCH");
}


/* 1 written, 0 conflict (retry), -1 error */
static int
kr_agg_roll_day_once(redisContext *c, const kr_agg_conf_t *conf,
    char **inst, size_t ninst, long day, long now, int attempt,
    int verbose)
{
    int             rc, k, expired, final, drop, found;
    long            h, hend;
    char            stamp[16], hk[16], meta[512], dest[4][512], tmp[4][512];
    char           *p;
    size_t          i;
    redisReply     *r;
    kr_agg_map_t    maps[4];
    kr_agg_keys_t   raw[4], watch, one;

    kr_agg_day_key(day, stamp);
    snprintf(meta, sizeof(meta), "%s{agg}:meta:d:%s", conf->prefix, stamp);

    memset(raw, 0, sizeof(raw));
    memset(&watch, 0, sizeof(watch));

    for (k = 0; k < 4; k++) {
        kr_agg_map_init(&maps[k]);
        snprintf(dest[k], sizeof(dest[k]), "%s{agg}:%s:%s", conf->prefix,
                 kr_agg_kinds[k], stamp);
        snprintf(tmp[k], sizeof(tmp[k]), "%s{agg}:tmp:%ld.%d:%s:%s",
                 conf->prefix, (long) getpid(), attempt, kr_agg_kinds[k],
                 stamp);
    }

    hend = day * 24 + 24 < now ? day * 24 + 24 : now;

    for (i = 0; i < ninst; i++) {
        for (h = day * 24; h < hend; h++) {
            kr_agg_hour_key(h, hk);
            kr_agg_keys_add(&raw[0], kr_agg_sprintf("%s{%s}:h:%s",
                            conf->prefix, inst[i], hk));
        }

        for (k = 1; k < 4; k++) {
            kr_agg_keys_add(&raw[k], kr_agg_sprintf("%s{%s}:%s:%s",
                            conf->prefix, inst[i], kr_agg_kinds[k], stamp));
        }
    }

    kr_agg_keys_add(&watch, kr_agg_strdup(meta));
    for (k = 0; k < 4; k++) {
        kr_agg_keys_add(&watch, kr_agg_strdup(dest[k]));
        for (i = 0; i < raw[k].n; i++) {
            kr_agg_keys_add(&watch, kr_agg_strdup(raw[k].v[i]));
        }
    }

    rc = -1;

    if (kr_agg_watch(c, &watch) != 0) {
        goto done;
    }

    r = kr_agg_cmd(c, "HGET %s expired", meta);
    if (kr_agg_redis_failed(c, r, "HGET")) {
        goto done;
    }

    expired = r->type == REDIS_REPLY_STRING && strcmp(r->str, "1") == 0;
    freeReplyObject(r);

    final = expired || day * 24 + 24 + conf->final_after_hours <= now;
    drop = expired || (final
                       && day * 24 + 24 + conf->retention_hours <= now);

    found = 0;

    for (k = 0; k < 4; k++) {
        if (kr_agg_read_into(c, &raw[k], &maps[k], &found) != 0) {
            goto done;
        }
    }

    if (expired) {
        if (found == 0) {
            r = kr_agg_cmd(c, "UNWATCH");
            rc = kr_agg_simple(c, r, "UNWATCH") == 0 ? 1 : -1;
            goto done;
        }

        /* late buckets for an expired day: add them to its totals */
        for (k = 0; k < 4; k++) {
            p = dest[k];
            one.v = &p;
            one.n = 1;
            one.cap = 1;
            if (kr_agg_read_into(c, &one, &maps[k], NULL) != 0) {
                goto done;
            }
        }
    }

    for (k = 0; k < 4; k++) {
        if (maps[k].nrows == 0) {
            continue;
        }

        if (kr_agg_write_hash(c, tmp[k], &maps[k]) != 0) {
            goto done;
        }

        r = kr_agg_cmd(c, "EXPIRE %s 3600", tmp[k]);
        if (kr_agg_simple(c, r, "EXPIRE") != 0) {
            goto done;
        }
    }

    r = kr_agg_cmd(c, "MULTI");
    if (kr_agg_simple(c, r, "MULTI") != 0) {
        goto done;
    }

    for (k = 0; k < 4; k++) {
        if (maps[k].nrows) {
            redisAppendCommand(c, "RENAME %s %s", tmp[k], dest[k]);

        } else {
            redisAppendCommand(c, "DEL %s", dest[k]);
        }
    }

    redisAppendCommand(c, "HSET %s rolled_at %ld hours %ld instances %ld "
                       "buckets %d final %d", meta, (long) time(NULL),
                       hend - day * 24, (long) ninst, found, final);

    if (drop) {
        redisAppendCommand(c, "HSET %s expired 1", meta);

        for (k = 0; k < 4; k++) {
            for (i = 0; i < raw[k].n; i++) {
                redisAppendCommand(c, "DEL %s", raw[k].v[i]);
            }
        }
    }

    redisAppendCommand(c, "EXEC");

    /* QUEUED replies, then the EXEC reply */
    for ( ;; ) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (kr_agg_redis_failed(c, r, "MULTI")) {
            goto done;
        }

        if (r->type == REDIS_REPLY_STATUS) {
            freeReplyObject(r);
            continue;
        }

        break;
    }

    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);

        for (k = 0; k < 4; k++) {
            r = kr_agg_cmd(c, "DEL %s", tmp[k]);
            if (kr_agg_simple(c, r, "DEL") != 0) {
                goto done;
            }
        }

        rc = 0;
        goto done;
    }

    freeReplyObject(r);

    if (verbose) {
        printf("rolled %s: %ld hours, %d buckets%s%s%s\n", stamp,
               hend - day * 24, found, final ? ", final" : "",
               drop ? ", raw buckets expired" : "",
               expired ? " (late buckets merged)" : "");
    }

    rc = 1;

done:

    for (k = 0; k < 4; k++) {
        kr_agg_map_free(&maps[k]);
        kr_agg_keys_free(&raw[k]);
    }

    kr_agg_keys_free(&watch);

    return rc;
}


static int
kr_agg_roll_month_once(redisContext *c, const kr_agg_conf_t *conf,
    long y, long m, long now, int attempt)
{
    int             rc, final, found;
    long            d, first, last, nd;
    char            stamp[16], ms[32], meta[512], dest[512], tmp[512];
    kr_agg_map_t    map;
    kr_agg_keys_t   days, watch;
    redisReply     *r;

    first = kr_agg_days_from_civil(y, m, 1);
    last = m == 12 ? kr_agg_days_from_civil(y + 1, 1, 1)
                   : kr_agg_days_from_civil(y, m + 1, 1);

    snprintf(ms, sizeof(ms), "%04ld%02ld", y, m);
    snprintf(meta, sizeof(meta), "%s{agg}:meta:m:%s", conf->prefix, ms);
    snprintf(dest, sizeof(dest), "%s{agg}:m:%s", conf->prefix, ms);
    snprintf(tmp, sizeof(tmp), "%s{agg}:tmp:%ld.%d:m:%s", conf->prefix,
             (long) getpid(), attempt, ms);

    memset(&days, 0, sizeof(days));
    memset(&watch, 0, sizeof(watch));
    kr_agg_map_init(&map);

    kr_agg_keys_add(&watch, kr_agg_strdup(meta));
    kr_agg_keys_add(&watch, kr_agg_strdup(dest));

    for (d = first; d < last; d++) {
        kr_agg_day_key(d, stamp);
        kr_agg_keys_add(&days, kr_agg_sprintf("%s{agg}:d:%s", conf->prefix,
                                              stamp));
        kr_agg_keys_add(&watch, kr_agg_strdup(days.v[days.n - 1]));
    }

    rc = -1;
    found = 0;
    nd = last - first;
    final = last * 24 + conf->final_after_hours <= now;

    if (kr_agg_watch(c, &watch) != 0
        || kr_agg_read_into(c, &days, &map, &found) != 0)
    {
        goto done;
    }

    if (map.nrows && kr_agg_write_hash(c, tmp, &map) != 0) {
        goto done;
    }

    r = kr_agg_cmd(c, "MULTI");
    if (kr_agg_simple(c, r, "MULTI") != 0) {
        goto done;
    }

    if (map.nrows) {
        redisAppendCommand(c, "RENAME %s %s", tmp, dest);

    } else {
        redisAppendCommand(c, "DEL %s", dest);
    }

    redisAppendCommand(c, "HSET %s rolled_at %ld days %d of %ld final %d",
                       meta, (long) time(NULL), found, nd, final);
    redisAppendCommand(c, "EXEC");

    for ( ;; ) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (kr_agg_redis_failed(c, r, "MULTI")) {
            goto done;
        }

        if (r->type == REDIS_REPLY_STATUS) {
            freeReplyObject(r);
            continue;
        }

        break;
    }

    rc = r->type == REDIS_REPLY_NIL ? 0 : 1;
    freeReplyObject(r);

    if (rc == 0) {
        r = kr_agg_cmd(c, "DEL %s", tmp);
        if (kr_agg_simple(c, r, "DEL") != 0) {
            rc = -1;
        }
    }

done:

    kr_agg_map_free(&map);
    kr_agg_keys_free(&days);
    kr_agg_keys_free(&watch);

    return rc;
}


static int
kr_agg_long_cmp(const void *a, const void *b)
{
    long  x, y;

    x = *(const long *) a;
    y = *(const long *) b;

    return x < y ? -1 : x > y;
}


/* day of a raw key's date suffix "...:YYYYMMDD[HH]", -1 if none */
static long
kr_agg_key_day(const char *key)
{
    long         y, m, d, n;
    const char  *p;

    p = strrchr(key, ':');
    if (p == NULL) {
        return -1;
    }

    p++;
    n = (long) strlen(p);

    if ((n != 8 && n != 10) || strspn(p, "0123456789") != (size_t) n) {
        return -1;
    }

    y = (p[0] - '0') * 1000 + (p[1] - '0') * 100 + (p[2] - '0') * 10
        + (p[3] - '0');
    m = (p[4] - '0') * 10 + (p[5] - '0');
    d = (p[6] - '0') * 10 + (p[7] - '0');

    if (m < 1 || m > 12 || d < 1 || d > 31) {
        return -1;
    }

    return kr_agg_days_from_civil(y, m, d);
}


static char *
kr_agg_glob_escape(const char *s)
{
    char    *out, *p;

    out = kr_agg_alloc(strlen(s) * 2 + 1);

    for (p = out; *s; s++) {
        if (*s == '*' || *s == '?' || *s == '[' || *s == ']' || *s == '\\')
        {
            *p++ = '\\';
        }
        *p++ = *s;
    }

    *p = '\0';

    return out;
}


int
kr_agg_rollup(redisContext *c, const kr_agg_conf_t *conf, long now,
    int verbose)
{
    int      rc, attempt, k;
    long     d, y, m, dd, *days, *months;
    char     stamp[16], *pat, *ep, *ei, **inst, **keys;
    size_t   i, j, ninst, nkeys, ndays, cap, nmonths;

    if (kr_agg_instances(c, conf, &inst, &ninst) != 0) {
        return KR_AGG_EXIT_REDIS;
    }

    days = NULL;
    ndays = 0;
    cap = 0;
    rc = 0;
    ep = kr_agg_glob_escape(conf->prefix);

    for (i = 0; rc == 0 && i < ninst; i++) {
        ei = kr_agg_glob_escape(inst[i]);

        for (k = 0; rc == 0 && k < 4; k++) {
            pat = kr_agg_sprintf("%s{%s}:%s:*", ep, ei,
                                 k == 0 ? "h" : kr_agg_kinds[k]);

            if (kr_agg_scan(c, pat, &keys, &nkeys) != 0) {
                rc = KR_AGG_EXIT_REDIS;
                free(pat);
                break;
            }

            free(pat);

            for (j = 0; j < nkeys; j++) {
                d = kr_agg_key_day(keys[j]);
                if (d < 0 || d * 24 >= now) {
                    continue;
                }

                if (ndays == cap) {
                    cap = cap ? cap * 2 : 64;
                    days = realloc(days, cap * sizeof(long));
                    if (days == NULL) {
                        kr_agg_die_oom();
                    }
                }

                days[ndays++] = d;
            }

            kr_agg_free_strings(keys, nkeys);
        }

        free(ei);
    }

    free(ep);

    if (ndays) {
        qsort(days, ndays, sizeof(long), kr_agg_long_cmp);
    }

    months = kr_agg_alloc((ndays + 1) * sizeof(long));
    nmonths = 0;

    for (i = 0; rc == 0 && i < ndays; i++) {
        if (i > 0 && days[i] == days[i - 1]) {
            continue;
        }

        for (attempt = 0; attempt < KR_AGG_RETRIES; attempt++) {
            k = kr_agg_roll_day_once(c, conf, inst, ninst, days[i], now,
                                     attempt, verbose);
            if (k != 0) {
                break;
            }
        }

        if (k < 0) {
            rc = KR_AGG_EXIT_REDIS;
            break;
        }

        if (k == 0) {
            kr_agg_day_key(days[i], stamp);
            fprintf(stderr, "kroute-agg: day %s changed during every "
                    "attempt, left for the next run\n", stamp);
        }

        kr_agg_civil_from_days(days[i], &y, &m, &dd);
        if (nmonths == 0 || months[nmonths - 1] != y * 100 + m) {
            months[nmonths++] = y * 100 + m;
        }
    }

    for (i = 0; rc == 0 && i < nmonths; i++) {
        for (attempt = 0; attempt < KR_AGG_RETRIES; attempt++) {
            k = kr_agg_roll_month_once(c, conf, months[i] / 100,
                                       months[i] % 100, now, attempt);
            if (k != 0) {
                break;
            }
        }

        if (k < 0) {
            rc = KR_AGG_EXIT_REDIS;
        }

        if (verbose && k > 0) {
            printf("rolled month %06ld\n", months[i]);
        }
    }

    free(months);
    free(days);
    kr_agg_free_strings(inst, ninst);

    return rc;
}
