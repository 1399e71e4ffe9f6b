
/*
 * Copyright (C) kroute authors
 */


/*
 * Price parsing and cost arithmetic.  A price of P USD per 1M tokens is
 * P * 10^6 micro-USD per 1M tokens, which is P * 10^6 pico-USD per token,
 * so a cost is a plain sum of token counts times integer prices.
 */


#include <string.h>

#include "kr_price.h"


static uint64_t kr_cost_mul_add(uint64_t acc, int64_t tokens, uint64_t price,
    int *sat);


int
kr_price_parse(const unsigned char *p, size_t len, uint64_t *out)
{
    size_t                frac, digits;
    uint64_t              n, d;
    const unsigned char  *end;

    if (p == NULL || len == 0) {
        return -1;
    }

    end = p + len;
    n = 0;
    digits = 0;

    for ( /* void */ ; p < end && *p >= '0' && *p <= '9'; p++) {
        d = (uint64_t) (*p - '0');

        if (n > (UINT64_MAX - d) / 10) {
            return -1;
        }

        n = n * 10 + d;
        digits++;
    }

    if (digits == 0) {
        return -1;
    }

    frac = 0;

    if (p < end && *p == '.') {
        p++;

        for ( /* void */ ; p < end && *p >= '0' && *p <= '9'; p++) {
            if (++frac > 6) {
                return -1;
            }

            d = (uint64_t) (*p - '0');

            if (n > (UINT64_MAX - d) / 10) {
                return -1;
            }

            n = n * 10 + d;
        }

        if (frac == 0) {
            return -1;
        }
    }

    if (p != end) {
        return -1;
    }

    for ( /* void */ ; frac < 6; frac++) {
        if (n > UINT64_MAX / 10) {
            return -1;
        }

        n *= 10;
    }

    *out = n;

    return 0;
}


static uint64_t
kr_cost_mul_add(uint64_t acc, int64_t tokens, uint64_t price, int *sat)
{
    uint64_t  t;

    if (tokens <= 0 || price == 0) {
        return acc;
    }

    t = (uint64_t) tokens;

    if (t > UINT64_MAX / price || acc > UINT64_MAX - t * price) {
        *sat = 1;
        return UINT64_MAX;
    }

    return acc + t * price;
}


uint64_t
kr_cost_pusd(const kr_price_t *price, const kr_usage_t *u)
{
    int       sat;
    int64_t   in, cached, cw, uncached;
    uint64_t  cost, cached_price, cw_price;

    in = u->input > 0 ? u->input : 0;
    cached = u->cached > 0 ? u->cached : 0;
    cw = u->cache_write > 0 ? u->cache_write : 0;

    /* a provider reporting more cached than total input bills no negative */

    uncached = in - cached - cw;
    if (uncached < 0) {
        uncached = 0;
    }

    cached_price = price->has_cached ? price->cached : price->input;
    cw_price = price->has_cache_write ? price->cache_write : price->input;

    sat = 0;
    cost = 0;

    cost = kr_cost_mul_add(cost, uncached, price->input, &sat);
    cost = kr_cost_mul_add(cost, cached, cached_price, &sat);
    cost = kr_cost_mul_add(cost, cw, cw_price, &sat);
    cost = kr_cost_mul_add(cost, u->output, price->output, &sat);

    return sat ? UINT64_MAX : cost;
}


size_t
kr_usd_format(unsigned char *buf, uint64_t pusd)
{
    int            i;
    size_t         n, k;
    uint64_t       whole, frac;
    unsigned char  tmp[24];

    whole = pusd / 1000000000000ULL;
    frac = pusd % 1000000000000ULL;

    k = 0;

    do {
        tmp[k++] = (unsigned char) ('0' + whole % 10);
        whole /= 10;
    } while (whole);

    n = 0;

    while (k) {
        buf[n++] = tmp[--k];
    }

    if (frac) {
        buf[n++] = '.';

        for (i = 11; i >= 0; i--) {
            buf[n + i] = (unsigned char) ('0' + frac % 10);
            frac /= 10;
        }

        n += 12;

        while (buf[n - 1] == '0') {
            n--;
        }
    }

    buf[n] = '\0';

    return n;
}


uint64_t
kr_pusd_to_micro(uint64_t pusd)
{
    return pusd / 1000000;
}
