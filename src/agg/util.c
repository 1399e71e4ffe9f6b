
/*
 * Copyright (C) kroute authors
 */

/*
 * Small exact helpers of kroute-agg: allocation that exits on failure,
 * UTC calendar arithmetic without the C library's time zones, decimal
 * money in integer pico-USD, percentages in basis points, and the
 * string-keyed metrics map every report and rollup is built on.
 */


#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include "agg.h"


void
kr_agg_die_oom(void)
{
    fprintf(stderr, "kroute-agg: out of memory\n");
    exit(KR_AGG_EXIT_CONFIG);
}


void *
kr_agg_alloc(size_t size)
{
    void  *p;

    p = calloc(1, size ? size : 1);
    if (p == NULL) {
        kr_agg_die_oom();
    }

    return p;
}


char *
kr_agg_strndup(const char *s, size_t n)
{
    char  *p;

    p = kr_agg_alloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';

    return p;
}


char *
kr_agg_strdup(const char *s)
{
    return kr_agg_strndup(s, strlen(s));
}


char *
kr_agg_sprintf(const char *fmt, ...)
{
    int       n;
    char     *p;
    va_list   ap;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);

    if (n < 0) {
        kr_agg_die_oom();
    }

    p = kr_agg_alloc((size_t) n + 1);

    va_start(ap, fmt);
    vsnprintf(p, (size_t) n + 1, fmt, ap);
    va_end(ap);

    return p;
}


/* days since 1970-01-01 of a proleptic Gregorian date */
long
kr_agg_days_from_civil(long y, long m, long d)
{
    long  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


void
kr_agg_civil_from_days(long z, long *y, long *m, long *d)
{
    long  era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp + (mp < 10 ? 3 : -9);
    *y = yoe + era * 400 + (*m <= 2);
}


static long
kr_agg_floor_div(long a, long b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}


void
kr_agg_hour_key(long hour, char *buf)
{
    long  y, m, d;

    kr_agg_civil_from_days(kr_agg_floor_div(hour, 24), &y, &m, &d);
    sprintf(buf, "%04ld%02ld%02ld%02ld", y, m, d,
            hour - kr_agg_floor_div(hour, 24) * 24);
}


void
kr_agg_day_key(long day, char *buf)
{
    long  y, m, d;

    kr_agg_civil_from_days(day, &y, &m, &d);
    sprintf(buf, "%04ld%02ld%02ld", y, m, d);
}


void
kr_agg_hour_iso(long hour, char *buf)
{
    long  y, m, d;

    kr_agg_civil_from_days(kr_agg_floor_div(hour, 24), &y, &m, &d);
    sprintf(buf, "%04ld-%02ld-%02ldT%02ld:00Z", y, m, d,
            hour - kr_agg_floor_div(hour, 24) * 24);
}


static int
kr_agg_digits(const char *s, int n, long *v)
{
    int  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char) s[i])) {
            return -1;
        }
        *v = *v * 10 + (s[i] - '0');
    }

    return 0;
}


/*
 * YYYY-MM-DD, YYYY-MM-DDTHH, YYYY-MM-DDTHH:MM[:SS][Z] (minutes ignored:
 * hours are the unit), YYYY-MM (first day) or @EPOCH seconds
 */
int
kr_agg_parse_time(const char *s, long *hour)
{
    long        y, m, d, h, ep;
    size_t      len;
    const char  *p;

    len = strlen(s);
    h = 0;
    d = 1;

    if (s[0] == '@') {
        if (len < 2 || len > 12) {
            return -1;
        }

        for (p = s + 1, ep = 0; *p; p++) {
            if (!isdigit((unsigned char) *p)) {
                return -1;
            }
            ep = ep * 10 + (*p - '0');
        }

        *hour = ep / 3600;
        return 0;
    }

    if (len < 7 || kr_agg_digits(s, 4, &y) != 0 || s[4] != '-'
        || kr_agg_digits(s + 5, 2, &m) != 0)
    {
        return -1;
    }

    if (len > 7) {
        if (len < 10 || s[7] != '-' || kr_agg_digits(s + 8, 2, &d) != 0) {
            return -1;
        }

        if (len > 10) {
            if ((s[10] != 'T' && s[10] != ' ') || len < 13
                || kr_agg_digits(s + 11, 2, &h) != 0)
            {
                return -1;
            }

            for (p = s + 13; *p; p++) {
                if (!isdigit((unsigned char) *p) && *p != ':'
                    && !(*p == 'Z' && p[1] == '\0'))
                {
                    return -1;
                }
            }
        }
    }

    if (y < 1970 || y > 9999 || m < 1 || m > 12 || h > 23 || d < 1
        || d > 31)
    {
        return -1;
    }

    /* reject 2024-02-30 and the like */
    if (kr_agg_days_from_civil(y, m, d)
        != kr_agg_days_from_civil(y, m, 1) + d - 1
        || (m < 12 && kr_agg_days_from_civil(y, m, d)
            >= kr_agg_days_from_civil(y, m + 1, 1))
        || (m == 12 && kr_agg_days_from_civil(y, m, d)
            >= kr_agg_days_from_civil(y + 1, 1, 1)))
    {
        return -1;
    }

    *hour = kr_agg_days_from_civil(y, m, d) * 24 + h;

    return 0;
}


int
kr_agg_parse_u128(const char *s, size_t len, kr_u128_t *v)
{
    size_t     i;
    kr_u128_t  n, max;

    if (len == 0 || len > 38) {
        return -1;
    }

    n = 0;
    max = ~(kr_u128_t) 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        if (n > (max - 9) / 10) {
            return -1;
        }

        n = n * 10 + (unsigned) (s[i] - '0');
    }

    *v = n;

    return 0;
}


/* "12.5" USD -> pico-USD, at most maxfrac fractional digits */
int
kr_agg_parse_usd(const char *s, int maxfrac, kr_u128_t *v)
{
    int         frac, seen;
    kr_u128_t   n;
    const char  *p;

    n = 0;
    frac = -1;
    seen = 0;

    for (p = s; *p; p++) {
        if (*p == '.') {
            if (frac >= 0) {
                return -1;
            }
            frac = 0;
            continue;
        }

        if (*p < '0' || *p > '9') {
            return -1;
        }

        if (frac >= 0 && ++frac > maxfrac) {
            return -1;
        }

        if (n > (kr_u128_t) 1 << 100) {
            return -1;
        }

        n = n * 10 + (unsigned) (*p - '0');
        seen = 1;
    }

    if (!seen) {
        return -1;
    }

    for (frac = frac < 0 ? 0 : frac; frac < 12; frac++) {
        n *= 10;
    }

    *v = n;

    return 0;
}


char *
kr_agg_u128_str(kr_u128_t v, char *buf)
{
    char    tmp[48];
    size_t  i, n;

    n = 0;

    do {
        tmp[n++] = (char) ('0' + (int) (v % 10));
        v /= 10;
    } while (v);

    for (i = 0; i < n; i++) {
        buf[i] = tmp[n - 1 - i];
    }

    buf[n] = '\0';

    return buf;
}


/*
 * USD with 6 fixed decimals: the micro-USD integer (pico / 10^6,
 * truncated toward zero as the contract's micro-USD display) with the
 * point set, so the text and the JSON cost_micro_usd always agree
 */
char *
kr_agg_usd_str(kr_i128_t pico, char *buf)
{
    char       digits[48];
    size_t     n;
    kr_u128_t  micro;
    char      *p;

    p = buf;

    if (pico < 0) {
        *p++ = '-';
        micro = (kr_u128_t) (-pico) / KR_AGG_PICO_PER_MICRO;

    } else {
        micro = (kr_u128_t) pico / KR_AGG_PICO_PER_MICRO;
    }

    if (pico < 0 && micro == 0) {
        p = buf;
    }

    kr_agg_u128_str(micro / 1000000, digits);
    n = strlen(digits);
    memcpy(p, digits, n);
    p += n;

    sprintf(p, ".%06u", (unsigned) (micro % 1000000));

    return buf;
}


/* basis points -> "12.50%", with an explicit sign for growth */
char *
kr_agg_pct_str(kr_i128_t bp, int sign, char *buf)
{
    kr_u128_t  a;
    char       digits[48];

    a = bp < 0 ? (kr_u128_t) (-bp) : (kr_u128_t) bp;

    kr_agg_u128_str(a / 100, digits);

    sprintf(buf, "%s%s.%02u%%",
            bp < 0 ? "-" : (sign && bp > 0 ? "+" : ""),
            digits, (unsigned) (a % 100));

    return buf;
}


/* a / b rounded half up; b > 0 */
kr_u128_t
kr_agg_div_round(kr_u128_t a, kr_u128_t b)
{
    return (a + b / 2) / b;
}


/* (cur - prev) / prev in basis points, rounded half away from zero */
kr_i128_t
kr_agg_growth_bp(kr_u128_t cur, kr_u128_t prev)
{
    if (cur >= prev) {
        return (kr_i128_t) kr_agg_div_round((cur - prev) * 10000, prev);
    }

    return -(kr_i128_t) kr_agg_div_round((prev - cur) * 10000, prev);
}


static const char  *kr_agg_metric_names[KR_AGG_NMETRICS] = {
    "req", "err", "in", "out", "cached", "cw", "reason", "cost_pusd",
    "lat_ms", "ttft_ms", "unparsed", "estimated"
};


int
kr_agg_metric_index(const char *name, size_t len)
{
    int  i;

    for (i = 0; i < KR_AGG_NMETRICS; i++) {
        if (strlen(kr_agg_metric_names[i]) == len
            && memcmp(kr_agg_metric_names[i], name, len) == 0)
        {
            return i;
        }
    }

    return -1;
}


const char *
kr_agg_metric_name(int i)
{
    return kr_agg_metric_names[i];
}


void
kr_agg_map_init(kr_agg_map_t *map)
{
    memset(map, 0, sizeof(kr_agg_map_t));
}


void
kr_agg_map_free(kr_agg_map_t *map)
{
    size_t  i;

    for (i = 0; i < map->nrows; i++) {
        free(map->rows[i]->key);
        free(map->rows[i]);
    }

    free(map->rows);
    free(map->slots);
    kr_agg_map_init(map);
}


static uint32_t
kr_agg_hash(const char *key, size_t len, int slot)
{
    size_t    i;
    uint32_t  h;

    h = 2166136261u ^ (uint32_t) slot;

    for (i = 0; i < len; i++) {
        h = (h ^ (unsigned char) key[i]) * 16777619u;
    }

    return h;
}


static void
kr_agg_map_grow(kr_agg_map_t *map)
{
    size_t         i, j, cap;
    kr_agg_row_t **slots;

    cap = map->cap ? map->cap * 2 : 64;
    slots = kr_agg_alloc(cap * sizeof(kr_agg_row_t *));

    for (i = 0; i < map->nrows; i++) {
        j = map->rows[i]->hash & (cap - 1);
        while (slots[j]) {
            j = (j + 1) & (cap - 1);
        }
        slots[j] = map->rows[i];
    }

    free(map->slots);
    map->slots = slots;
    map->cap = cap;

    map->rows = realloc(map->rows, cap / 2 * sizeof(kr_agg_row_t *));
    if (map->rows == NULL) {
        kr_agg_die_oom();
    }
}


kr_agg_metrics_t *
kr_agg_map_find(kr_agg_map_t *map, const char *key, size_t len, int slot)
{
    size_t         j;
    uint32_t       h;
    kr_agg_row_t  *row;

    if (map->cap == 0) {
        return NULL;
    }

    h = kr_agg_hash(key, len, slot);

    for (j = h & (map->cap - 1); map->slots[j]; j = (j + 1) & (map->cap - 1))
    {
        row = map->slots[j];
        if (row->hash == h && row->slot == slot && row->key_len == len
            && memcmp(row->key, key, len) == 0)
        {
            return &row->v;
        }
    }

    return NULL;
}


kr_agg_metrics_t *
kr_agg_map_get(kr_agg_map_t *map, const char *key, size_t len, int slot)
{
    size_t             j;
    kr_agg_row_t      *row;
    kr_agg_metrics_t  *v;

    v = kr_agg_map_find(map, key, len, slot);
    if (v) {
        return v;
    }

    if ((map->nrows + 1) * 2 > map->cap) {
        kr_agg_map_grow(map);
    }

    row = kr_agg_alloc(sizeof(kr_agg_row_t));
    row->key = kr_agg_strndup(key, len);
    row->key_len = len;
    row->slot = slot;
    row->hash = kr_agg_hash(key, len, slot);

    for (j = row->hash & (map->cap - 1); map->slots[j];
         j = (j + 1) & (map->cap - 1))
    {
        /* void */
    }

    map->slots[j] = row;
    map->rows[map->nrows++] = row;

    return &row->v;
}


static int  kr_agg_sort_metric;


static int
kr_agg_row_cmp(const void *a, const void *b)
{
    int                  c;
    const kr_agg_row_t  *x, *y;

    x = *(const kr_agg_row_t * const *) a;
    y = *(const kr_agg_row_t * const *) b;

    if (kr_agg_sort_metric >= 0) {
        if (x->v.m[kr_agg_sort_metric] != y->v.m[kr_agg_sort_metric]) {
            return x->v.m[kr_agg_sort_metric] > y->v.m[kr_agg_sort_metric]
                   ? -1 : 1;
        }
    }

    c = strcmp(x->key, y->key);
    if (c) {
        return c;
    }

    return x->slot < y->slot ? -1 : (x->slot > y->slot);
}


/* rows by metric descending (metric < 0: by key), ties by key */
void
kr_agg_map_sort(kr_agg_map_t *map, int metric)
{
    kr_agg_sort_metric = metric;

    if (map->nrows > 1) {
        qsort(map->rows, map->nrows, sizeof(kr_agg_row_t *),
              kr_agg_row_cmp);
    }
}
