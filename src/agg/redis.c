
/*
 * Copyright (C) kroute authors
 */

/*
 * Redis side of kroute-agg: a synchronous connection with connect and
 * command timeouts, the instance set, key scans, and the loader that
 * reads one report window: whole final days from the rollup, every
 * other hour from the raw hour buckets of all instances, pipelined.
 */


#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include "agg.h"


typedef struct {
    kr_agg_map_t          *map;
    int                    slot;
    int                    dims;
} kr_agg_pending_t;


redisContext *
kr_agg_redis_connect(const kr_agg_conf_t *conf)
{
    char            pass[512];
    FILE           *f;
    size_t          len;
    redisReply     *r;
    redisContext   *c;
    struct timeval  tv;

    tv.tv_sec = conf->timeout_ms / 1000;
    tv.tv_usec = (conf->timeout_ms % 1000) * 1000;

    c = redisConnectWithTimeout(conf->redis_host, conf->redis_port, tv);

    if (c == NULL || c->err) {
        fprintf(stderr, "kroute-agg: cannot connect to redis at %s:%d: %s\n",
                conf->redis_host, conf->redis_port,
                c ? c->errstr : "out of memory");
        if (c) {
            redisFree(c);
        }
        return NULL;
    }

    if (redisSetTimeout(c, tv) != REDIS_OK) {
        fprintf(stderr, "kroute-agg: cannot set redis timeout\n");
        redisFree(c);
        return NULL;
    }

    if (conf->redis_password_file) {
        f = fopen(conf->redis_password_file, "r");
        if (f == NULL || fgets(pass, sizeof(pass), f) == NULL) {
            fprintf(stderr, "kroute-agg: cannot read redis password file "
                    "\"%s\"\n", conf->redis_password_file);
            if (f) {
                fclose(f);
            }
            redisFree(c);
            return NULL;
        }

        fclose(f);

        len = strcspn(pass, "\r\n");
        r = redisCommand(c, "AUTH %b", pass, len);
        memset(pass, 0, sizeof(pass));

        if (kr_agg_redis_failed(c, r, "AUTH")) {
            redisFree(c);
            return NULL;
        }

        freeReplyObject(r);
    }

    if (conf->redis_db) {
        r = redisCommand(c, "SELECT %d", conf->redis_db);
        if (kr_agg_redis_failed(c, r, "SELECT")) {
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }

    r = redisCommand(c, "PING");
    if (kr_agg_redis_failed(c, r, "PING")) {
        fprintf(stderr, "kroute-agg: redis at %s:%d does not answer\n",
                conf->redis_host, conf->redis_port);
        redisFree(c);
        return NULL;
    }

    freeReplyObject(r);

    return c;
}


/* prints the failure, frees an error reply; 1 if the command failed */
int
kr_agg_redis_failed(redisContext *c, redisReply *r, const char *what)
{
    if (r == NULL) {
        fprintf(stderr, "kroute-agg: redis %s failed: %s\n", what,
                c->errstr[0] ? c->errstr : "no reply");
        return 1;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "kroute-agg: redis %s failed: %.*s\n", what,
                (int) r->len, r->str);
        freeReplyObject(r);
        return 1;
    }

    return 0;
}


redisReply *
kr_agg_cmd(redisContext *c, const char *fmt, ...)
{
    void     *r;
    va_list   ap;

    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);

    return r;
}


void
kr_agg_free_strings(char **v, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        free(v[i]);
    }

    free(v);
}


static int
kr_agg_str_cmp(const void *a, const void *b)
{
    return strcmp(*(char * const *) a, *(char * const *) b);
}


int
kr_agg_instances(redisContext *c, const kr_agg_conf_t *conf,
    char ***names, size_t *n)
{
    size_t       i;
    redisReply  *r;

    *names = NULL;
    *n = 0;

    r = kr_agg_cmd(c, "SMEMBERS %sinstances", conf->prefix);
    if (kr_agg_redis_failed(c, r, "SMEMBERS")) {
        return -1;
    }

    if (r->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "kroute-agg: %sinstances is not a set\n",
                conf->prefix);
        freeReplyObject(r);
        return -1;
    }

    *names = kr_agg_alloc(r->elements * sizeof(char *));

    for (i = 0; i < r->elements; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (strcmp(r->element[i]->str, "agg") == 0) {
            fprintf(stderr, "kroute-agg: instance name \"agg\" is reserved "
                    "for the rollup keys\n");
            freeReplyObject(r);
            kr_agg_free_strings(*names, *n);
            *names = NULL;
            *n = 0;
            return -1;
        }

        (*names)[(*n)++] = kr_agg_strndup(r->element[i]->str,
                                          r->element[i]->len);
    }

    freeReplyObject(r);

    qsort(*names, *n, sizeof(char *), kr_agg_str_cmp);

    return 0;
}


int
kr_agg_scan(redisContext *c, const char *pattern, char ***keys, size_t *n)
{
    size_t       i, cap;
    char         cursor[32];
    redisReply  *r, *list;

    *keys = NULL;
    *n = 0;
    cap = 0;
    strcpy(cursor, "0");

    do {
        r = kr_agg_cmd(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (kr_agg_redis_failed(c, r, "SCAN")) {
            return -1;
        }

        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
            || r->element[0]->type != REDIS_REPLY_STRING
            || r->element[0]->len >= sizeof(cursor)
            || r->element[1]->type != REDIS_REPLY_ARRAY)
        {
            fprintf(stderr, "kroute-agg: unexpected SCAN reply\n");
            freeReplyObject(r);
            return -1;
        }

        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
        list = r->element[1];

        for (i = 0; i < list->elements; i++) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 64;
                *keys = realloc(*keys, cap * sizeof(char *));
                if (*keys == NULL) {
                    kr_agg_die_oom();
                }
            }

            (*keys)[(*n)++] = kr_agg_strndup(list->element[i]->str,
                                             list->element[i]->len);
        }

        freeReplyObject(r);

    } while (strcmp(cursor, "0") != 0);

    return 0;
}


/*
 * adds an HGETALL reply of "<key>|<metric>" fields to the map;
 * unknown metrics are skipped (a newer module may count more)
 */
int
kr_agg_hash_add(kr_agg_map_t *map, redisReply *r, int slot, int dims)
{
    int                 mi;
    size_t              i;
    kr_u128_t           v;
    const char         *bar;
    redisReply         *f, *val;
    kr_agg_metrics_t   *m;
    static int          warned;

    (void) dims;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
        fprintf(stderr, "kroute-agg: unexpected HGETALL reply\n");
        return -1;
    }

    for (i = 0; i < r->elements; i += 2) {
        f = r->element[i];
        val = r->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        bar = NULL;
        if (f->len) {
            for (bar = f->str + f->len - 1; bar > f->str && *bar != '|';
                 bar--)
            {
                /* void */
            }
        }

        if (bar == NULL || *bar != '|') {
            continue;
        }

        mi = kr_agg_metric_index(bar + 1, f->len - (bar + 1 - f->str));
        if (mi < 0) {
            continue;
        }

        if (kr_agg_parse_u128(val->str, val->len, &v) != 0) {
            if (!warned) {
                fprintf(stderr, "kroute-agg: skipping non-counter value "
                        "\"%.*s\" of field \"%.*s\"\n", (int) val->len,
                        val->str, (int) (bar - f->str), f->str);
                warned = 1;
            }
            continue;
        }

        m = kr_agg_map_get(map, f->str, (size_t) (bar - f->str), slot);
        m->m[mi] += v;
    }

    return 0;
}


static void
kr_agg_pend(redisContext *c, kr_agg_pending_t **pend, size_t *n,
    size_t *cap, kr_agg_map_t *map, int slot, const char *key)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *pend = realloc(*pend, *cap * sizeof(kr_agg_pending_t));
        if (*pend == NULL) {
            kr_agg_die_oom();
        }
    }

    (*pend)[*n].map = map;
    (*pend)[*n].slot = slot;
    (*pend)[(*n)++].dims = 0;

    redisAppendCommand(c, "HGETALL %s", key);
}


int
kr_agg_load(redisContext *c, const kr_agg_conf_t *conf, kr_agg_data_t *data,
    long from, long to, long slot_hours)
{
    int                 rc, *final, *expired;
    long                d, dfrom, dto, h, hfrom, hto;
    char                key[1024], stamp[16], hk[16];
    size_t              i, j, k, ninst, npend, cap;
    char              **inst;
    redisReply         *r;
    kr_agg_map_t       *umaps[3];
    kr_agg_pending_t   *pend;
    static const char  *ukinds[3] = { "ud", "ufd", "ucd" };

    kr_agg_map_init(&data->facts);
    kr_agg_map_init(&data->users);
    kr_agg_map_init(&data->ufeat);
    kr_agg_map_init(&data->ucohort);
    data->from = from;
    data->to = to;
    data->nhashes = 0;
    data->expired = 0;

    umaps[0] = &data->users;
    umaps[1] = &data->ufeat;
    umaps[2] = &data->ucohort;

    if (kr_agg_instances(c, conf, &inst, &ninst) != 0) {
        return KR_AGG_EXIT_REDIS;
    }

    dfrom = from / 24;
    dto = (to + 23) / 24;

    /* user buckets are per day: the days wholly inside the window */
    data->ufrom = (from + 23) / 24;
    data->uto = to / 24;

    final = kr_agg_alloc((size_t) (dto - dfrom) * sizeof(int));
    expired = kr_agg_alloc((size_t) (dto - dfrom) * sizeof(int));

    for (d = dfrom; d < dto; d++) {
        kr_agg_day_key(d, stamp);
        redisAppendCommand(c, "HMGET %s{agg}:meta:d:%s final expired",
                           conf->prefix, stamp);
    }

    rc = 0;

    for (d = dfrom; d < dto; d++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (kr_agg_redis_failed(c, r, "HMGET")) {
            rc = KR_AGG_EXIT_REDIS;
            break;
        }

        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
            final[d - dfrom] = r->element[0]->type == REDIS_REPLY_STRING
                               && strcmp(r->element[0]->str, "1") == 0;
            expired[d - dfrom] = r->element[1]->type == REDIS_REPLY_STRING
                                 && strcmp(r->element[1]->str, "1") == 0;
        }

        freeReplyObject(r);
    }

    pend = NULL;
    npend = 0;
    cap = 0;

    for (d = dfrom; rc == 0 && d < dto; d++) {
        kr_agg_day_key(d, stamp);

        hfrom = d * 24 > from ? d * 24 : from;
        hto = d * 24 + 24 < to ? d * 24 + 24 : to;

        if (final[d - dfrom] && hfrom == d * 24 && hto == d * 24 + 24) {
            snprintf(key, sizeof(key), "%s{agg}:d:%s", conf->prefix, stamp);
            kr_agg_pend(c, &pend, &npend, &cap, &data->facts,
                        (int) ((d * 24 - from) / slot_hours), key);

            for (k = 0; k < 3; k++) {
                snprintf(key, sizeof(key), "%s{agg}:%s:%s", conf->prefix,
                         ukinds[k], stamp);
                kr_agg_pend(c, &pend, &npend, &cap, umaps[k], 0, key);
            }

            continue;
        }

        if (expired[d - dfrom]) {
            /* a part of an expired day: its hours are gone */
            data->expired += (int) (hto - hfrom);
        }

        for (h = hfrom; h < hto; h++) {
            kr_agg_hour_key(h, hk);

            for (i = 0; i < ninst; i++) {
                snprintf(key, sizeof(key), "%s{%s}:h:%s", conf->prefix,
                         inst[i], hk);
                kr_agg_pend(c, &pend, &npend, &cap, &data->facts,
                            (int) ((h - from) / slot_hours), key);
            }
        }

        if (hfrom == d * 24 && hto == d * 24 + 24) {
            for (i = 0; i < ninst; i++) {
                for (k = 0; k < 3; k++) {
                    snprintf(key, sizeof(key), "%s{%s}:%s:%s", conf->prefix,
                             inst[i], ukinds[k], stamp);
                    kr_agg_pend(c, &pend, &npend, &cap, umaps[k], 0, key);
                }
            }
        }
    }

    for (j = 0; rc == 0 && j < npend; j++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            r = NULL;
        }

        if (kr_agg_redis_failed(c, r, "HGETALL")) {
            rc = KR_AGG_EXIT_REDIS;
            break;
        }

        if (r->type == REDIS_REPLY_ARRAY && r->elements) {
            data->nhashes++;
        }

        if (kr_agg_hash_add(pend[j].map, r, pend[j].slot, pend[j].dims)
            != 0)
        {
            rc = KR_AGG_EXIT_REDIS;
        }

        freeReplyObject(r);
    }

    free(pend);
    free(final);
    free(expired);
    kr_agg_free_strings(inst, ninst);

    return rc;
}


void
kr_agg_data_free(kr_agg_data_t *data)
{
    kr_agg_map_free(&data->facts);
    kr_agg_map_free(&data->users);
    kr_agg_map_free(&data->ufeat);
    kr_agg_map_free(&data->ucohort);
}
