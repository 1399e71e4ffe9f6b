
/*
 * Copyright (C) kroute authors
 */


/*
 * Unit tests of routing: the cheapest model meeting the bar with hand
 * computed expected costs in pico-USD, expected output from defaults,
 * the catalog and learned means, output limits, provider cool-down and
 * its expiry, sticky A/B splits with their proportions and fallbacks,
 * and the bounded explanation.
 */


#include "tap.h"
#include "kr_route.h"
#include "kr_usage.h"


#define S(s)   { sizeof(s) - 1, (const unsigned char *) (s) }

/* is_str() on an array trips -Waddress */
#define is_expl(b, w, ...)  is_mem((b), strlen(b), (w), __VA_ARGS__)

#define P_ALPHA  0
#define P_BETA   1
#define P_GAMMA  2
#define NPROV    3


/*
 * Prices in pico-USD per token (= micro-USD per 1M tokens):
 *   nano  0.1/0.4   mini  0.4/1.6   big  2/8
 */

static kr_route_model_t  cat[] = {
    { S("nano"), { 100000, 400000, 0, 0, 0, 0 },
      { 80, 60, 50, 50, 50, 50, 40, 30 }, P_ALPHA, 0, 0 },
    { S("mini"), { 400000, 1600000, 0, 0, 0, 0 },
      { 85, 70, 70, 70, 70, 70, 75, 60 }, P_BETA, 0, 0 },
    { S("big"), { 2000000, 8000000, 0, 0, 0, 0 },
      { 90, 90, 90, 90, 90, 90, 90, 90 }, P_GAMMA, 0, 0 },
    { S("claude"), { 100, 100, 0, 0, 0, 0 },
      { 99, 99, 99, 99, 99, 99, 99, 99 }, P_GAMMA, 1, 0 }
};

#define NCAT  (sizeof(cat) / sizeof(cat[0]))

static const kr_str_t  prov_names[NPROV] = {
    S("alpha"), S("beta"), S("gamma")
};


static void
input_init(kr_route_input_t *in, int task, int bar, uint64_t est_input)
{
    memset(in, 0, sizeof(kr_route_input_t));
    in->est_input = est_input;
    in->max_tokens = -1;
    in->max_completion_tokens = -1;
    in->n = 1;
    in->task = task;
    in->bar = bar;
    in->format = 0;
    in->now_ms = 1000;
}


static int
pick(const kr_route_model_t *m, size_t n, const kr_route_input_t *in,
    kr_route_result_t *res, char *buf, size_t size)
{
    res->explain = buf;
    res->explain_size = size;

    return kr_route_pick(m, n, in, res);
}


static void
test_cheapest(void)
{
    char               buf[KR_ROUTE_EXPLAIN_LEN];
    kr_route_input_t   in;
    kr_route_result_t  res;

    /*
     * code, bar 70, 1000 input tokens, default output 768:
     *   nano  quality 40, out
     *   mini  1000 * 400000 + 768 * 1600000  = 1628800000
     *   big   1000 * 2000000 + 768 * 8000000 = 8144000000
     *   claude another API format, out
     */

    input_init(&in, KR_TASK_CODE, 70, 1000);

    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "code bar 70: mini");
    is_int(res.chosen, 1, "chosen index");
    is_uint(res.cost_pusd, 1628800000ULL, "mini expected cost");
    is_uint(res.output_tokens, 768, "code default output");
    is_int(res.output_source, KR_ROUTE_OUT_DEFAULT, "output from default");
    is_uint(res.candidates, 2, "two candidates");
    is_uint(res.cooling, 0, "none cooling");
    is_int(res.split, -1, "no split");
    is_int(res.arm, -1, "no arm");
    is_expl(buf, "task=code bar=70 candidates=mini:0.0016288,big:0.008144"
           " chose=mini out=768", "explanation");
    is_uint(res.explain_len, strlen(buf), "explanation length");

    is_uint(kr_route_expected_cost(cat, 2, &in, NULL), 8144000000ULL,
            "big expected cost");

    /* classification: 1000 * 100000 + 16 * 400000 = 106400000 */

    input_init(&in, KR_TASK_CLASSIFICATION, 75, 1000);
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 0,
           "classification bar 75: nano");
    is_uint(res.cost_pusd, 106400000ULL, "nano expected cost");
    is_uint(res.candidates, 3, "three candidates");

    /* bar respected: nano has 80, mini 85 */

    in.bar = 81;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "classification bar 81: mini");
    is_uint(res.cost_pusd, 1000 * 400000ULL + 16 * 1600000ULL,
            "mini classification cost");

    in.bar = 90;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 2,
           "bar 90 equal to big's quality: big");

    in.bar = 91;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), -1,
           "bar 91: no model");
    is_int(res.chosen, -1, "chosen -1");
    is_uint(res.candidates, 0, "no candidates");
    is_expl(buf, "task=classification bar=91 candidates=none chose=none",
           "explanation without a model");

    /* the other API format's model meets every bar but is never picked */

    in.format = 1;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 3,
           "format 1: its own model");
}


static void
test_not_candidate(void)
{
    char               buf[KR_ROUTE_EXPLAIN_LEN];
    kr_route_model_t   m[2];
    kr_route_input_t   in;
    kr_route_result_t  res;

    memcpy(m, cat, sizeof(m));
    m[0].quality[KR_TASK_QA] = -1;

    input_init(&in, KR_TASK_QA, 0, 100);
    is_int(pick(m, 2, &in, &res, buf, sizeof(buf)), 1,
           "quality -1 is not a candidate even at bar 0");

    /* ties go to catalog order */

    m[1] = m[0];
    m[1].quality[KR_TASK_QA] = 50;
    m[0].quality[KR_TASK_QA] = 50;
    is_int(pick(m, 2, &in, &res, buf, sizeof(buf)), 0,
           "equal cost: first in catalog");

    is_int(pick(m, 0, &in, &res, buf, sizeof(buf)), -1, "empty catalog");
}


static void
test_output_shape(void)
{
    int                i;
    char               buf[KR_ROUTE_EXPLAIN_LEN];
    kr_route_model_t   m[2];
    kr_route_stats_t   stats[2 * KR_TASK_N];
    kr_route_input_t   in;
    kr_route_result_t  res;

    /*
     * "cheapin" 0.05/10, "balanced" 1/2, 2000 input tokens:
     *   classification (16 out)
     *     cheapin  2000 * 50000 + 16 * 10000000    = 260000000
     *     balanced 2000 * 1000000 + 16 * 2000000   = 2032000000
     *   reasoning (1024 out)
     *     cheapin  100000000 + 1024 * 10000000     = 10340000000
     *     balanced 2000000000 + 1024 * 2000000     = 4048000000
     */

    memset(m, 0, sizeof(m));
    m[0].name.data = (const unsigned char *) "cheapin";
    m[0].name.len = 7;
    m[0].price.input = 50000;
    m[0].price.output = 10000000;
    m[1].name.data = (const unsigned char *) "balanced";
    m[1].name.len = 8;
    m[1].price.input = 1000000;
    m[1].price.output = 2000000;
    m[1].provider = 1;

    memset(m[0].quality, 0, sizeof(m[0].quality));
    memset(m[1].quality, 0, sizeof(m[1].quality));

    input_init(&in, KR_TASK_CLASSIFICATION, 0, 2000);
    is_int(pick(m, 2, &in, &res, buf, sizeof(buf)), 0,
           "short output: cheap input wins");
    is_uint(res.cost_pusd, 260000000ULL, "cheapin classification cost");
    is_uint(kr_route_expected_cost(m, 1, &in, NULL), 2032000000ULL,
            "balanced classification cost");

    input_init(&in, KR_TASK_REASONING, 0, 2000);
    is_int(pick(m, 2, &in, &res, buf, sizeof(buf)), 1,
           "long output: cheap output wins");
    is_uint(res.cost_pusd, 4048000000ULL, "balanced reasoning cost");
    is_uint(kr_route_expected_cost(m, 0, &in, NULL), 10340000000ULL,
            "cheapin reasoning cost");

    /* a configured expectation replaces the default */

    m[0].output_tokens = 50;
    is_int(pick(m, 2, &in, &res, buf, sizeof(buf)), 0,
           "output_tokens=50: cheapin wins reasoning");
    is_uint(res.cost_pusd, 100000000ULL + 50 * 10000000ULL,
            "cheapin cost with output_tokens");
    is_int(res.output_source, KR_ROUTE_OUT_CONFIG, "output from catalog");

    /* max_tokens caps the long answer: 100000000 + 100 * 10000000 */

    m[0].output_tokens = 0;
    in.max_tokens = 100;
    is_int(pick(m, 2, &in, &res, buf, sizeof(buf)), 0,
           "max_tokens 100: cheapin wins reasoning");
    is_uint(res.cost_pusd, 1100000000ULL, "cost capped by max_tokens");
    is_uint(res.output_tokens, 100, "output capped by max_tokens");

    in.max_completion_tokens = 40;
    is_uint(kr_route_expected_output(m, 0, &in, NULL), 40,
            "smaller of max_completion_tokens and max_tokens");
    in.max_completion_tokens = 4000;
    is_uint(kr_route_expected_output(m, 0, &in, NULL), 100,
            "smaller of max_tokens and max_completion_tokens");
    in.max_tokens = -1;
    is_uint(kr_route_expected_output(m, 0, &in, NULL), 1024,
            "cap above the default leaves it");
    in.max_completion_tokens = 0;
    is_uint(kr_route_expected_output(m, 0, &in, NULL), 1024,
            "limit 0 counts as unset");

    /* a learned short answer flips the reasoning choice */

    memset(stats, 0, sizeof(stats));
    in.max_completion_tokens = -1;
    in.stats = stats;

    for (i = 0; i < KR_ROUTE_STATS_MIN; i++) {
        kr_route_stats_record(stats, 2, 0, KR_TASK_REASONING, 50, 1);
    }

    is_int(pick(m, 2, &in, &res, buf, sizeof(buf)), 0,
           "learned 50 tokens: cheapin wins reasoning");
    is_uint(res.cost_pusd, 100000000ULL + 50 * 10000000ULL,
            "cheapin cost with learned output");

    /* n choices multiply the output, not the prompt */

    input_init(&in, KR_TASK_CODE, 70, 1000);
    in.n = 3;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1, "n=3: mini");
    is_uint(res.output_tokens, 3 * 768, "n=3 output");
    is_uint(res.cost_pusd, 1000 * 400000ULL + 3 * 768 * 1600000ULL,
            "n=3 cost");

    /* rewrite: about the size of the input */

    is_uint(kr_route_default_output(KR_TASK_REWRITE, 1000), 1000,
            "rewrite default: input sized");
    is_uint(kr_route_default_output(KR_TASK_REWRITE, 3), 16,
            "rewrite default: at least 16");
    is_uint(kr_route_default_output(KR_TASK_EXTRACTION, 3), 128,
            "extraction default");
    is_uint(kr_route_default_output(KR_TASK_SUMMARIZATION, 3), 256,
            "summarization default");
    is_uint(kr_route_default_output(KR_TASK_GENERATION, 3), 512,
            "generation default");
    is_uint(kr_route_default_output(KR_TASK_QA, 3), 384, "qa default");
    is_uint(kr_route_default_output(99, 3), 384, "unknown task: qa");

    /* saturation instead of wrapping */

    input_init(&in, KR_TASK_CODE, 0, UINT64_MAX / 2);
    is_uint(kr_route_expected_cost(cat, 2, &in, NULL), UINT64_MAX,
            "huge input saturates");
}


static void
test_learned(void)
{
    int                i;
    char               buf[KR_ROUTE_EXPLAIN_LEN];
    kr_route_input_t   in;
    kr_route_stats_t   stats[NCAT * KR_TASK_N];
    kr_route_result_t  res;

    memset(stats, 0, sizeof(stats));

    input_init(&in, KR_TASK_CODE, 70, 1000);
    in.stats = stats;

    for (i = 0; i < KR_ROUTE_STATS_MIN - 1; i++) {
        kr_route_stats_record(stats, NCAT, 1, KR_TASK_CODE, 100, 1);
    }

    pick(cat, NCAT, &in, &res, buf, sizeof(buf));
    is_uint(res.output_tokens, 768, "19 responses: still the default");
    is_int(res.output_source, KR_ROUTE_OUT_DEFAULT, "source default");

    /* the 20th is for n=2: 200 tokens are 100 per choice */

    kr_route_stats_record(stats, NCAT, 1, KR_TASK_CODE, 200, 2);
    is_uint(stats[1 * KR_TASK_N + KR_TASK_CODE].count, 20, "count 20");
    is_uint(stats[1 * KR_TASK_N + KR_TASK_CODE].out_sum, 2000, "sum 2000");

    pick(cat, NCAT, &in, &res, buf, sizeof(buf));
    is_uint(res.output_tokens, 100, "20 responses: learned mean");
    is_int(res.output_source, KR_ROUTE_OUT_LEARNED, "source learned");
    is_uint(res.cost_pusd, 1000 * 400000ULL + 100 * 1600000ULL,
            "cost with learned output");

    /* learned per task: another task keeps its default */

    in.task = KR_TASK_GENERATION;
    is_uint(kr_route_expected_output(cat, 1, &in, NULL), 512,
            "other task: default");

    /* learned mean is rounded and still capped */

    in.task = KR_TASK_CODE;
    kr_route_stats_record(stats, NCAT, 1, KR_TASK_CODE, 111, 1);
    is_uint(kr_route_expected_output(cat, 1, &in, NULL), 101,
            "mean 2111/21 = 100.52 rounds to 101");

    in.max_tokens = 50;
    is_uint(kr_route_expected_output(cat, 1, &in, NULL), 50,
            "learned mean capped by max_tokens");

    /* out of range calls are ignored */

    kr_route_stats_record(stats, NCAT, NCAT, KR_TASK_CODE, 1, 1);
    kr_route_stats_record(stats, NCAT, 0, KR_TASK_N, 1, 1);
    kr_route_stats_record(NULL, NCAT, 0, 0, 1, 1);
    ok(1, "out of range records ignored");

    /* halving keeps the mean */

    memset(stats, 0, sizeof(stats));

    for (i = 0; i < KR_ROUTE_STATS_HALVE; i++) {
        kr_route_stats_record(stats, NCAT, 2, KR_TASK_QA, 300, 1);
    }

    is_uint(stats[2 * KR_TASK_N + KR_TASK_QA].count,
            KR_ROUTE_STATS_HALVE / 2, "count halved");
    is_uint(stats[2 * KR_TASK_N + KR_TASK_QA].out_sum,
            300 * (KR_ROUTE_STATS_HALVE / 2), "sum halved");
}


static void
test_health(void)
{
    char               buf[KR_ROUTE_EXPLAIN_LEN];
    kr_health_t        h, health[NPROV];
    kr_route_input_t   in;
    kr_health_conf_t   conf;
    kr_route_result_t  res;

    kr_health_conf_init(&conf);
    is_int(conf.failures, 3, "default failures 3");

    conf.window_ms = 30000;
    conf.cooldown_ms = 60000;

    memset(health, 0, sizeof(health));
    ok(kr_health_ok(&health[P_BETA], 0), "fresh provider healthy");

    kr_health_record(&health[P_BETA], 503, KR_ERROR_UPSTREAM_5XX, 1000,
                     &conf);
    kr_health_record(&health[P_BETA], 529, KR_ERROR_OVERLOADED, 2000, &conf);
    ok(kr_health_ok(&health[P_BETA], 2000), "two failures: healthy");

    kr_health_record(&health[P_BETA], 429, KR_ERROR_RATE_LIMIT, 3000, &conf);
    ok(!kr_health_ok(&health[P_BETA], 3000), "third failure: cooling");
    is_uint(health[P_BETA].cool_until_ms, 63000, "cool until 3000+60000");
    is_uint(health[P_BETA].cooldowns, 1, "one cool-down counted");
    ok(!kr_health_ok(&health[P_BETA], 62999), "cooling at 62999");
    ok(kr_health_ok(&health[P_BETA], 63000), "back at 63000");

    /* routing skips the cooling provider, then comes back */

    input_init(&in, KR_TASK_CODE, 70, 1000);
    in.health = health;
    in.n_providers = NPROV;
    in.provider_names = prov_names;
    in.now_ms = 10000;

    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 2,
           "mini's provider cooling: big");
    is_uint(res.cooling, 1, "one skipped for cool-down");
    is_uint(res.candidates, 1, "one candidate left");
    is_uint(res.cost_pusd, 8144000000ULL, "big's cost");
    ok(!res.all_cooling, "not all cooling");
    is_expl(buf, "task=code bar=70 candidates=big:0.008144 cooling=beta "
           "chose=big out=768", "explanation names the cooling provider");

    in.now_ms = 63000;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "after the cool-down: mini again");
    is_uint(res.cooling, 0, "none cooling");

    /* every candidate cooling: the cheapest anyway, flagged */

    in.now_ms = 10000;
    health[P_GAMMA].cool_until_ms = 20000;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "all cooling: cheapest of them");
    ok(res.all_cooling, "all_cooling set");
    is_uint(res.candidates, 0, "no healthy candidate");
    is_uint(res.cooling, 2, "two cooling");
    is_expl(buf, "task=code bar=70 candidates=none cooling=beta,gamma "
           "chose=mini out=768 all_cooling", "all cooling explanation");

    in.provider_names = NULL;
    pick(cat, NCAT, &in, &res, buf, sizeof(buf));
    is_expl(buf, "task=code bar=70 candidates=none cooling=p1,p2 "
           "chose=mini out=768 all_cooling", "providers by index");

    /* failures spread wider than the window do not cool */

    memset(&h, 0, sizeof(h));
    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 0, &conf);
    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 20000, &conf);
    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 40000, &conf);
    ok(kr_health_ok(&h, 40000), "3 failures over 40 s: healthy");
    is_uint(h.failures, 1, "run restarted");
    kr_health_record(&h, 502, KR_ERROR_UPSTREAM_5XX, 50000, &conf);
    kr_health_record(&h, 0, KR_ERROR_NONE, 60000, &conf);
    ok(!kr_health_ok(&h, 60000), "no reply counts: cooling");

    /* failures during a cool-down do not extend it */

    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 61000, &conf);
    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 62000, &conf);
    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 63000, &conf);
    is_uint(h.cool_until_ms, 120000, "late failures do not extend");

    /* success resets the run */

    memset(&h, 0, sizeof(h));
    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 1000, &conf);
    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 1001, &conf);
    kr_health_record(&h, 200, KR_ERROR_NONE, 1002, &conf);
    kr_health_record(&h, 500, KR_ERROR_UPSTREAM_5XX, 1003, &conf);
    ok(kr_health_ok(&h, 1003), "success in between: healthy");
    is_uint(h.failures, 1, "one failure after the success");

    /* client errors are not the provider's fault */

    memset(&h, 0, sizeof(h));
    kr_health_record(&h, 400, KR_ERROR_INVALID_REQUEST, 1000, &conf);
    kr_health_record(&h, 400, KR_ERROR_CONTEXT_LENGTH, 1001, &conf);
    kr_health_record(&h, 401, KR_ERROR_AUTH, 1002, &conf);
    kr_health_record(&h, 404, KR_ERROR_NOT_FOUND, 1003, &conf);
    ok(kr_health_ok(&h, 1003), "4xx client errors: healthy");
    is_uint(h.failures, 0, "4xx not counted");

    /* quota: at once */

    memset(&h, 0, sizeof(h));
    kr_health_record(&h, 429, KR_ERROR_QUOTA, 5000, &conf);
    ok(!kr_health_ok(&h, 5000), "insufficient_quota cools at once");
    is_uint(h.cool_until_ms, 65000, "quota cool until 5000+60000");
    is_int(h.last_error, KR_ERROR_QUOTA, "last error recorded");

    /* NULL conf: defaults */

    memset(&h, 0, sizeof(h));
    kr_health_record(&h, 503, 0, 100, NULL);
    kr_health_record(&h, 503, 0, 200, NULL);
    kr_health_record(&h, 503, 0, 300, NULL);
    is_uint(h.cool_until_ms, 300 + KR_HEALTH_COOLDOWN_MS,
            "default conf cools after 3");
}


static void
test_splits(void)
{
    int                i, a, arms[KR_ROUTE_ARMS_MAX];
    char               key[32], buf[KR_ROUTE_EXPLAIN_LEN];
    kr_route_input_t   in;
    kr_route_split_t   split[2];
    kr_route_result_t  res;

    memset(split, 0, sizeof(split));
    split[0].name.data = (const unsigned char *) "code-ab";
    split[0].name.len = 7;
    split[0].task = KR_TASK_CODE;
    split[0].n_arms = 2;
    split[0].arms[0].model = 1;
    split[0].arms[0].weight = 50;
    split[0].arms[1].model = 2;
    split[0].arms[1].weight = 50;

    input_init(&in, KR_TASK_CODE, 70, 1000);
    in.splits = split;
    in.n_splits = 1;

    memset(arms, 0, sizeof(arms));

    for (i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "user-%d", i);
        in.sticky = kr_route_hash((const unsigned char *) key, strlen(key));
        pick(cat, NCAT, &in, &res, buf, sizeof(buf));

        if (res.arm >= 0 && res.arm < KR_ROUTE_ARMS_MAX) {
            arms[res.arm]++;
        }

        if (res.chosen != (res.arm == 0 ? 1 : 2) || !res.arm_applied) {
            break;
        }
    }

    is_int(i, 10000, "every request routed to its arm's model");
    ok(arms[0] >= 4800 && arms[0] <= 5200,
       "50/50: arm a %d of 10000 within 2%%", arms[0]);
    ok(arms[1] >= 4800 && arms[1] <= 5200,
       "50/50: arm b %d of 10000 within 2%%", arms[1]);

    /* sticky */

    in.sticky = kr_route_hash((const unsigned char *) "alice", 5);
    pick(cat, NCAT, &in, &res, buf, sizeof(buf));
    a = res.arm;

    for (i = 0; i < 100; i++) {
        in.est_input = 10 + i * 97;
        pick(cat, NCAT, &in, &res, buf, sizeof(buf));

        if (res.arm != a) {
            break;
        }
    }

    is_int(i, 100, "same user, same arm, whatever the request");

    /* the arm's model and cost go into the result */

    for (i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "u%d", i);
        in.sticky = kr_route_hash((const unsigned char *) key, strlen(key));
        in.est_input = 1000;
        pick(cat, NCAT, &in, &res, buf, sizeof(buf));

        if (res.arm == 1) {
            break;
        }
    }

    is_int(res.chosen, 2, "arm b: big");
    is_uint(res.cost_pusd, 8144000000ULL, "arm b: big's expected cost");
    is_expl(buf, "task=code bar=70 candidates=mini:0.0016288,big:0.008144"
           " chose=big out=768 split=code-ab arm=b", "arm explanation");

    /* 90/10 within 1% */

    split[0].arms[0].weight = 90;
    split[0].arms[1].weight = 10;
    memset(arms, 0, sizeof(arms));

    for (i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "req-%08x", (unsigned) i * 2654435761u);
        in.sticky = kr_route_hash((const unsigned char *) key, strlen(key));
        pick(cat, NCAT, &in, &res, buf, sizeof(buf));
        arms[res.arm & 3]++;
    }

    ok(arms[0] >= 8900 && arms[0] <= 9100,
       "90/10: arm a %d of 10000 within 1%%", arms[0]);

    /* an arm below the bar falls back to the cheapest */

    split[0].arms[0].model = 0;        /* nano: code quality 40 */
    split[0].arms[0].weight = 1;
    split[0].arms[1].weight = 0;

    in.sticky = 12345;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "arm below the bar: cheapest");
    is_int(res.split, 0, "split recorded");
    is_int(res.arm, 0, "arm recorded");
    ok(!res.arm_applied, "arm not applied");
    is_expl(buf, "task=code bar=70 candidates=mini:0.0016288,big:0.008144"
           " chose=mini out=768 split=code-ab arm=a arm_fallback",
           "fallback explanation");

    /* control arm: the cheapest */

    split[0].arms[0].model = KR_ROUTE_ARM_ROUTED;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "control arm: cheapest");
    ok(res.arm_applied, "control arm applied");

    /* split for another task or feature does not apply */

    split[0].arms[0].model = 2;
    in.task = KR_TASK_GENERATION;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "other task: no split");
    is_int(res.split, -1, "no split recorded");

    in.task = KR_TASK_CODE;
    split[0].feature = kr_route_hash((const unsigned char *) "chat", 4);
    in.feature = kr_route_hash((const unsigned char *) "search", 6);
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "other feature: no split");

    in.feature = split[0].feature;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 2,
           "its feature: the arm");

    /* first applicable split wins; any-task split */

    split[1] = split[0];
    split[1].task = -1;
    split[1].feature = 0;
    split[1].arms[0].model = 0;
    in.n_splits = 2;
    in.task = KR_TASK_CLASSIFICATION;
    in.bar = 0;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 0,
           "any-task split");
    is_int(res.split, 1, "second split");

    /* a split naming a model out of the catalog is ignored */

    split[1].arms[0].model = 99;
    in.bar = 81;
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "bad arm model ignored");
    is_int(res.split, -1, "bad split not recorded");
}


static void
test_explain_bounds(void)
{
    char               buf[40];
    kr_route_input_t   in;
    kr_route_result_t  res;

    input_init(&in, KR_TASK_CODE, 70, 1000);

    memset(buf, 'x', sizeof(buf));
    is_int(pick(cat, NCAT, &in, &res, buf, sizeof(buf)), 1,
           "small buffer: still routed");
    ok(res.explain_len < sizeof(buf), "fits");
    ok(buf[res.explain_len] == '\0', "terminated");
    is_expl(buf, "task=code bar=70 candidates=mini:...",
           "cut with an ellipsis");

    is_int(pick(cat, NCAT, &in, &res, NULL, 0), 1, "no buffer");
    is_uint(res.explain_len, 0, "no explanation");

    is_int(pick(cat, NCAT, &in, &res, buf, 1), 1, "one byte buffer");
    is_expl(buf, "", "empty explanation");

    ok(kr_route_hash((const unsigned char *) "", 0) != 0, "hash never 0");
    ok(kr_route_hash((const unsigned char *) "a", 1)
       != kr_route_hash((const unsigned char *) "b", 1), "hash differs");
}


int
main(int argc, char **argv)
{
    tap_init(argc, argv);

    test_cheapest();
    test_not_candidate();
    test_output_shape();
    test_learned();
    test_health();
    test_splits();
    test_explain_bounds();

    return tap_done();
}
