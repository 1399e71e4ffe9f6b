
/*
 * Copyright (C) kroute authors
 */


/*
 * Money for kroute: prices in USD per million tokens parsed exactly from
 * their decimal text, request costs in integer pico-USD, and decimal
 * formatting for variables and reports.  There is no floating point.
 */


#ifndef _KR_PRICE_H_INCLUDED_
#define _KR_PRICE_H_INCLUDED_


#include "kr_usage.h"


/* room for any uint64 pico-USD amount as "<int>.<12 digits>" + NUL */
#define KR_USD_LEN  32


/* micro-USD per 1M tokens, numerically pico-USD per token */
typedef struct {
    uint64_t  input;
    uint64_t  output;
    uint64_t  cached;
    uint64_t  cache_write;
    unsigned  has_cached:1;
    unsigned  has_cache_write:1;
} kr_price_t;


/* "0.05" -> 50000; 0 ok, -1 on junk, sign, > 6 decimals or overflow */
int kr_price_parse(const unsigned char *p, size_t len, uint64_t *out);

/* cost of a usage in pico-USD, saturating at UINT64_MAX */
uint64_t kr_cost_pusd(const kr_price_t *price, const kr_usage_t *u);

/* "0.000185", trailing zeros trimmed, "0" for zero; buf: KR_USD_LEN */
size_t kr_usd_format(unsigned char *buf, uint64_t pusd);

/* whole micro-USD, rounded down */
uint64_t kr_pusd_to_micro(uint64_t pusd);


#endif /* _KR_PRICE_H_INCLUDED_ */
