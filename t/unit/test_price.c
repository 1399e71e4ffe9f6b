
/*
 * Copyright (C) kroute authors
 */


/*
 * Unit tests of price parsing, cost and USD formatting, with every
 * expected cost worked out by hand from the recorded usage: integer
 * pico-USD, no floating point anywhere.
 */


#include "tap.h"
#include "kr_price.h"


static uint64_t
price(const char *s)
{
    uint64_t  v;

    if (kr_price_parse((const unsigned char *) s, strlen(s), &v) != 0) {
        return UINT64_MAX;
    }

    return v;
}


static void
usage(kr_usage_t *u, int64_t in, int64_t out, int64_t cached, int64_t cw)
{
    kr_usage_init(u);

    u->input = in;
    u->output = out;
    u->cached = cached;
    u->cache_write = cw;
    u->have_usage = 1;
}


static void
test_parse(void)
{
    int             i;
    size_t          len;
    uint64_t        v;
    unsigned char  *p;

    static const struct {
        const char  *s;
        uint64_t     v;
    } good[] = {
        { "0", 0 },
        { "0.05", 50000 },
        { "0.40", 400000 },
        { "0.005", 5000 },
        { "1", 1000000 },
        { "2.5", 2500000 },
        { "15", 15000000 },
        { "0.000001", 1 },
        { "3.750000", 3750000 },
        { "007.5", 7500000 },
        { "18446744073709.551615", UINT64_MAX },
        { NULL, 0 }
    };

    static const char  *bad[] = {
        "", "-1", "+1", "-0.05", ".5", "5.", "1.0000001", "0.0000005",
        "1e3", "1,5", "0x10", " 1", "1 ", "abc", "1.2.3", "$1",
        "18446744073709.551616", "18446744073709551616",
        "99999999999999999999", NULL
    };

    for (i = 0; good[i].s; i++) {
        p = tap_dup(good[i].s, &len);
        v = 7;
        is_int(kr_price_parse(p, len, &v), 0, "price %s parses", good[i].s);
        is_uint(v, good[i].v, "price %s", good[i].s);
        free(p);
    }

    for (i = 0; bad[i]; i++) {
        p = tap_dup(bad[i], &len);
        v = 7;
        is_int(kr_price_parse(p, len, &v), -1, "price '%s' refused", bad[i]);
        is_uint(v, 7, "'%s' leaves the output alone", bad[i]);
        free(p);
    }

    is_int(kr_price_parse(NULL, 0, &v), -1, "NULL refused");
    is_int(kr_price_parse((const unsigned char *) "1.5xyz", 3, &v), 0,
           "length bounds the text");
    is_uint(v, 1500000, "only the first three bytes read");
}


static void
test_cost(void)
{
    kr_usage_t  u;
    kr_price_t  nano, sol, sonnet, flat;

    /* gpt-5-nano: input 0.05, output 0.40, cached 0.005 */
    memset(&nano, 0, sizeof(nano));
    nano.input = price("0.05");
    nano.output = price("0.40");
    nano.cached = price("0.005");
    nano.has_cached = 1;

    /* plain reasoning reply: P 8, C 377 (reasoning inside C) */
    usage(&u, 8, 377, 0, -1);
    u.reasoning = 320;
    is_uint(kr_cost_pusd(&nano, &u), 8 * 50000 + 377 * 400000,
            "plain reasoning: 8 x 50000 + 377 x 400000 pico-USD");
    is_uint(kr_cost_pusd(&nano, &u), 151200000, "= 151200000 pico-USD");

    /* multiturn 50/526, tool call 162/287, image 2245/100 */
    usage(&u, 50, 526, 0, -1);
    is_uint(kr_cost_pusd(&nano, &u), 50 * 50000 + 526 * 400000, "multiturn");
    usage(&u, 162, 287, 0, -1);
    is_uint(kr_cost_pusd(&nano, &u), 162 * 50000 + 287 * 400000,
            "tool call");
    usage(&u, 2245, 100, 0, -1);
    is_uint(kr_cost_pusd(&nano, &u), 2245 * 50000 + 100 * 400000,
            "image prompt");

    /* a hypothetical gpt-5.6-sol: input 1.25, output 10, cached 0.125,
       cache write 1.5 */
    memset(&sol, 0, sizeof(sol));
    sol.input = price("1.25");
    sol.output = price("10");
    sol.cached = price("0.125");
    sol.cache_write = price("1.5");
    sol.has_cached = 1;
    sol.has_cache_write = 1;

    usage(&u, 4020, 4, 4012, 0);
    is_uint(kr_cost_pusd(&sol, &u),
            8ULL * 1250000 + 4012ULL * 125000 + 4 * 10000000ULL,
            "cache read 4012: uncached 8 at input, 4012 at cached");
    usage(&u, 4020, 4, 0, 4012);
    is_uint(kr_cost_pusd(&sol, &u),
            8ULL * 1250000 + 4012ULL * 1500000 + 4 * 10000000ULL,
            "cache write 4012: 4012 at the cache-write price");

    /* no cached / cache write price: those tokens bill at input */
    sol.has_cached = 0;
    sol.has_cache_write = 0;
    usage(&u, 4020, 4, 4012, 0);
    is_uint(kr_cost_pusd(&sol, &u), 4020ULL * 1250000 + 4 * 10000000ULL,
            "no cached price: cached at input price");
    usage(&u, 4020, 4, 0, 4012);
    is_uint(kr_cost_pusd(&sol, &u), 4020ULL * 1250000 + 4 * 10000000ULL,
            "no cache-write price: written at input price");

    /* claude sonnet 4.5: input 3, output 15, cache read 0.30, write 3.75;
       P 1114 = 3 + 1111 cached, C 406 */
    memset(&sonnet, 0, sizeof(sonnet));
    sonnet.input = price("3");
    sonnet.output = price("15");
    sonnet.cached = price("0.30");
    sonnet.cache_write = price("3.75");
    sonnet.has_cached = 1;
    sonnet.has_cache_write = 1;

    usage(&u, 1114, 406, 1111, 0);
    is_uint(kr_cost_pusd(&sonnet, &u),
            3ULL * 3000000 + 1111ULL * 300000 + 406ULL * 15000000,
            "anthropic cache read 1111");
    is_uint(kr_cost_pusd(&sonnet, &u), 6432300000ULL,
            "= 6432300000 pico-USD");

    /* unknown counts bill nothing; cached above input clamps at 0 */
    usage(&u, -1, -1, -1, -1);
    is_uint(kr_cost_pusd(&sonnet, &u), 0, "unknown usage costs 0");
    usage(&u, 10, 0, 20, 5);
    is_uint(kr_cost_pusd(&sonnet, &u), 20ULL * 300000 + 5ULL * 3750000,
            "uncached clamps at 0");

    /* saturation instead of wrap-around */
    memset(&flat, 0, sizeof(flat));
    flat.input = UINT64_MAX / 2;
    flat.output = UINT64_MAX / 2;
    usage(&u, 3, 0, 0, 0);
    is_uint(kr_cost_pusd(&flat, &u), UINT64_MAX, "product saturates");
    usage(&u, 1, 2, 0, 0);
    is_uint(kr_cost_pusd(&flat, &u), UINT64_MAX, "sum saturates");
    usage(&u, INT64_MAX, INT64_MAX, 0, 0);
    flat.input = 1;
    flat.output = 1;
    is_uint(kr_cost_pusd(&flat, &u), (uint64_t) INT64_MAX * 2,
            "huge counts at 1 pico-USD fit");
}


static void
test_format(void)
{
    size_t         n;
    unsigned char  buf[KR_USD_LEN];

#define USD(pusd, want)                                                     \
    memset(buf, 'Z', sizeof(buf));                                          \
    n = kr_usd_format(buf, pusd);                                           \
    is_mem(buf, n, want, "%s USD", want);                                   \
    ok(buf[n] == '\0', "%s: NUL-terminated", want)

    USD(0, "0");
    USD(1, "0.000000000001");
    USD(185000000ULL, "0.000185");
    USD(151200000ULL, "0.0001512");
    USD(6432300000ULL, "0.0064323");
    USD(1000000000000ULL, "1");
    USD(1500000000000ULL, "1.5");
    USD(12000000000000ULL, "12");
    USD(10000000000001ULL, "10.000000000001");
    USD(UINT64_MAX, "18446744.073709551615");

    is_uint(kr_pusd_to_micro(151200000ULL), 151, "micro-USD rounds down");
    is_uint(kr_pusd_to_micro(999999), 0, "under a micro-USD");
    is_uint(kr_pusd_to_micro(1000000000000ULL), 1000000, "1 USD");
}


int
main(int argc, char **argv)
{
    tap_init(argc, argv);

    test_parse();
    test_cost();
    test_format();

    return tap_done();
}
