
/*
 * Copyright (C) kroute authors
 */


/*
 * Cheapest-good-enough routing: expected cost per candidate from the
 * estimated input and the expected output, provider cool-down after a
 * run of failures, sticky A/B splits, and a bounded one-line explanation
 * of every decision for $kroute_route_reason and the logs.
 */


#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "kr_route.h"


typedef struct {
    char                 *p;
    size_t                size;
    size_t                len;
    unsigned              full:1;
} kr_route_buf_t;


static int kr_route_eligible(const kr_route_model_t *m,
    const kr_route_input_t *in);
static int kr_route_cooling(const kr_route_model_t *m,
    const kr_route_input_t *in);
static int kr_route_split_arm(const kr_route_input_t *in, size_t n,
    int *split);
static uint64_t kr_route_mul(uint64_t a, uint64_t b);
static uint64_t kr_route_add(uint64_t a, uint64_t b);
static uint32_t kr_route_mix(uint32_t h);
static void kr_route_put(kr_route_buf_t *b, const char *s, size_t len);
static void kr_route_puts(kr_route_buf_t *b, const char *s);
static void kr_route_put_usd(kr_route_buf_t *b, uint64_t pusd);
static void kr_route_put_provider(kr_route_buf_t *b,
    const kr_route_input_t *in, unsigned provider);


/*
 * Expected completion tokens per choice when nothing is learned or
 * configured.  Labels are a word or two; extraction returns a small
 * JSON object; a summary is a paragraph or two; a rewrite is about as
 * long as the text it rewrites; generation and QA answers run a few
 * paragraphs; code answers carry a code block plus prose; reasoning
 * models spend most of their output thinking.
 */

static const uint64_t  kr_route_default_out[KR_TASK_N] = {
    16,      /* classification */
    128,     /* extraction */
    256,     /* summarization */
    0,       /* rewrite: the input size */
    512,     /* generation */
    384,     /* qa */
    768,     /* code */
    1024     /* reasoning */
};

#define KR_ROUTE_REWRITE_MIN  16


uint64_t
kr_route_default_output(int task, uint64_t est_input)
{
    if (task < 0 || task >= KR_TASK_N) {
        return kr_route_default_out[KR_TASK_QA];
    }

    if (task == KR_TASK_REWRITE) {
        return est_input > KR_ROUTE_REWRITE_MIN ? est_input
                                                : KR_ROUTE_REWRITE_MIN;
    }

    return kr_route_default_out[task];
}


uint64_t
kr_route_expected_output(const kr_route_model_t *m, size_t i,
    const kr_route_input_t *in, int *source)
{
    int                      src;
    uint64_t                 out, cap;
    const kr_route_stats_t  *s;

    src = KR_ROUTE_OUT_DEFAULT;
    out = 0;

    if (in->stats != NULL && in->task >= 0 && in->task < KR_TASK_N) {
        s = &in->stats[i * KR_TASK_N + in->task];

        if (s->count >= KR_ROUTE_STATS_MIN) {
            /* rounded to nearest */
            out = (s->out_sum + s->count / 2) / s->count;
            src = KR_ROUTE_OUT_LEARNED;
        }
    }

    if (src == KR_ROUTE_OUT_DEFAULT) {
        if (m[i].output_tokens) {
            out = m[i].output_tokens;
            src = KR_ROUTE_OUT_CONFIG;

        } else {
            out = kr_route_default_output(in->task, in->est_input);
        }
    }

    /* a limit of 0 is refused by providers; treat it as unset */

    cap = 0;

    if (in->max_completion_tokens > 0) {
        cap = (uint64_t) in->max_completion_tokens;
    }

    if (in->max_tokens > 0 && (cap == 0 || (uint64_t) in->max_tokens < cap)) {
        cap = (uint64_t) in->max_tokens;
    }

    if (cap && out > cap) {
        out = cap;
    }

    if (source) {
        *source = src;
    }

    return in->n > 1 ? kr_route_mul(out, (uint64_t) in->n) : out;
}


uint64_t
kr_route_expected_cost(const kr_route_model_t *m, size_t i,
    const kr_route_input_t *in, uint64_t *output_tokens)
{
    uint64_t  out;

    out = kr_route_expected_output(m, i, in, NULL);

    if (output_tokens) {
        *output_tokens = out;
    }

    /* the prompt is billed once whatever n is */

    return kr_route_add(kr_route_mul(in->est_input, m[i].price.input),
                        kr_route_mul(out, m[i].price.output));
}


int
kr_route_pick(const kr_route_model_t *m, size_t n,
    const kr_route_input_t *in, kr_route_result_t *res)
{
    int             best, cbest, arm, split, listed;
    char            num[24];
    size_t          i, j;
    uint64_t        cost, best_cost, cbest_cost;
    kr_route_buf_t  b;

    memset(res, 0, offsetof(kr_route_result_t, explain));
    res->chosen = -1;
    res->split = -1;
    res->arm = -1;

    b.p = res->explain;
    b.size = res->explain ? res->explain_size : 0;
    b.len = 0;
    b.full = 0;

    if (b.size) {
        b.p[0] = '\0';
    }

    kr_route_puts(&b, "task=");
    kr_route_puts(&b, (in->task >= 0 && in->task < KR_TASK_N)
                      ? kr_task_name(in->task) : "unknown");
    snprintf(num, sizeof(num), " bar=%d", in->bar);
    kr_route_puts(&b, num);
    kr_route_puts(&b, " candidates=");

    best = -1;
    cbest = -1;
    best_cost = 0;
    cbest_cost = 0;
    listed = 0;

    for (i = 0; i < n; i++) {

        if (!kr_route_eligible(&m[i], in)) {
            continue;
        }

        cost = kr_route_expected_cost(m, i, in, NULL);

        if (kr_route_cooling(&m[i], in)) {
            res->cooling++;

            if (cbest < 0 || cost < cbest_cost) {
                cbest = (int) i;
                cbest_cost = cost;
            }

            continue;
        }

        res->candidates++;

        if (listed++) {
            kr_route_put(&b, ",", 1);
        }

        kr_route_put(&b, (const char *) m[i].name.data, m[i].name.len);
        kr_route_put(&b, ":", 1);
        kr_route_put_usd(&b, cost);

        if (best < 0 || cost < best_cost) {
            best = (int) i;
            best_cost = cost;
        }
    }

    if (listed == 0) {
        kr_route_puts(&b, "none");
    }

    if (res->cooling) {
        kr_route_puts(&b, " cooling=");
        listed = 0;

        for (i = 0; i < n; i++) {
            if (!kr_route_eligible(&m[i], in) || !kr_route_cooling(&m[i], in))
            {
                continue;
            }

            /* each provider once */

            for (j = 0; j < i; j++) {
                if (m[j].provider == m[i].provider
                    && kr_route_eligible(&m[j], in))
                {
                    break;
                }
            }

            if (j < i) {
                continue;
            }

            if (listed++) {
                kr_route_put(&b, ",", 1);
            }

            kr_route_put_provider(&b, in, m[i].provider);
        }
    }

    if (best < 0 && cbest >= 0) {
        best = cbest;
        best_cost = cbest_cost;
        res->all_cooling = 1;
    }

    if (best >= 0) {
        arm = kr_route_split_arm(in, n, &split);

        if (split >= 0) {
            res->split = split;
            res->arm = arm;
        }

        if (arm >= 0) {
            j = in->splits[split].arms[arm].model;

            if (j == KR_ROUTE_ARM_ROUTED) {
                res->arm_applied = 1;

            } else if (kr_route_eligible(&m[j], in)
                       && (!kr_route_cooling(&m[j], in) || res->all_cooling))
            {
                best = (int) j;
                best_cost = kr_route_expected_cost(m, j, in, NULL);
                res->arm_applied = 1;
            }
        }

        res->chosen = best;
        res->cost_pusd = best_cost;
        res->output_tokens = kr_route_expected_output(m, (size_t) best, in,
                                                      &res->output_source);
    }

    kr_route_puts(&b, " chose=");

    if (best < 0) {
        kr_route_puts(&b, "none");

    } else {
        kr_route_put(&b, (const char *) m[best].name.data,
                     m[best].name.len);
        snprintf(num, sizeof(num), " out=%llu",
                 (unsigned long long) res->output_tokens);
        kr_route_puts(&b, num);

        if (res->all_cooling) {
            kr_route_puts(&b, " all_cooling");
        }
    }

    if (res->split >= 0) {
        kr_route_puts(&b, " split=");
        kr_route_put(&b, (const char *) in->splits[res->split].name.data,
                     in->splits[res->split].name.len);
        num[0] = 'a' + res->arm;
        num[1] = '\0';
        kr_route_puts(&b, " arm=");
        kr_route_puts(&b, num);

        if (!res->arm_applied) {
            kr_route_puts(&b, " arm_fallback");
        }
    }

    res->explain_len = b.len;

    return res->chosen;
}


static int
kr_route_eligible(const kr_route_model_t *m, const kr_route_input_t *in)
{
    int  q;

    if (m->format != in->format || in->task < 0 || in->task >= KR_TASK_N) {
        return 0;
    }

    q = m->quality[in->task];

    return q >= 0 && q >= in->bar;
}


static int
kr_route_cooling(const kr_route_model_t *m, const kr_route_input_t *in)
{
    if (in->health == NULL || m->provider >= in->n_providers) {
        return 0;
    }

    return !kr_health_ok(&in->health[m->provider], in->now_ms);
}


/*
 * The first split for the request's task and feature draws an arm from
 * the sticky hash, salted with the split's name so that two experiments
 * do not put the same users in the same arms.
 */

static int
kr_route_split_arm(const kr_route_input_t *in, size_t n, int *split)
{
    size_t                   i, k;
    uint32_t                 total, point;
    const kr_route_split_t  *s;

    *split = -1;

    for (i = 0; i < in->n_splits; i++) {
        s = &in->splits[i];

        if ((s->task >= 0 && s->task != in->task)
            || (s->feature != 0 && s->feature != in->feature))
        {
            continue;
        }

        total = 0;

        for (k = 0; k < s->n_arms && k < KR_ROUTE_ARMS_MAX; k++) {
            total += s->arms[k].weight;
        }

        if (total == 0) {
            continue;
        }

        *split = (int) i;

        point = kr_route_mix(in->sticky
                             ^ kr_route_hash(s->name.data, s->name.len))
                % total;

        for (k = 0; k < s->n_arms && k < KR_ROUTE_ARMS_MAX; k++) {
            if (point < s->arms[k].weight) {
                break;
            }

            point -= s->arms[k].weight;
        }

        if (s->arms[k].model != KR_ROUTE_ARM_ROUTED
            && s->arms[k].model >= n)
        {
            /* a split naming a model out of the catalog draws nothing */
            *split = -1;
            return -1;
        }

        return (int) k;
    }

    return -1;
}


void
kr_route_stats_record(kr_route_stats_t *stats, size_t n_models,
    size_t model, int task, uint64_t output, int64_t n)
{
    kr_route_stats_t  *s;

    if (stats == NULL || model >= n_models || task < 0 || task >= KR_TASK_N)
    {
        return;
    }

    s = &stats[model * KR_TASK_N + task];

    if (n > 1) {
        output /= (uint64_t) n;
    }

    s->out_sum = kr_route_add(s->out_sum, output);
    s->count++;

    if (s->count >= KR_ROUTE_STATS_HALVE) {
        s->out_sum /= 2;
        s->count /= 2;
    }
}


void
kr_health_conf_init(kr_health_conf_t *conf)
{
    conf->failures = KR_HEALTH_FAILURES;
    conf->window_ms = KR_HEALTH_WINDOW_MS;
    conf->cooldown_ms = KR_HEALTH_COOLDOWN_MS;
}


/*
 * Rate limits, overload and server errors (and no reply at all, status
 * 0) count towards a cool-down; an exhausted quota cools at once since
 * retrying cannot help; a success ends the run; other client errors say
 * nothing about the provider.
 */

void
kr_health_record(kr_health_t *h, int http_status, int error_class,
    uint64_t now_ms, const kr_health_conf_t *conf)
{
    kr_health_conf_t  def;

    if (conf == NULL) {
        kr_health_conf_init(&def);
        conf = &def;
    }

    if (error_class == KR_ERROR_QUOTA) {
        h->failures = 0;
        h->cooldowns++;
        h->cool_until_ms = now_ms + conf->cooldown_ms;
        h->last_failure_ms = now_ms;
        h->last_status = http_status;
        h->last_error = error_class;
        return;
    }

    if (error_class == KR_ERROR_NONE
        && http_status >= 200 && http_status < 400)
    {
        h->failures = 0;
        return;
    }

    if (!(http_status == 0 || http_status == 429 || http_status >= 500
          || error_class == KR_ERROR_RATE_LIMIT
          || error_class == KR_ERROR_OVERLOADED
          || error_class == KR_ERROR_UPSTREAM_5XX))
    {
        return;
    }

    h->last_failure_ms = now_ms;
    h->last_status = http_status;
    h->last_error = error_class;

    if (now_ms < h->cool_until_ms) {
        /* replies to requests sent before the cool-down began */
        return;
    }

    if (h->failures == 0 || now_ms - h->run_start_ms > conf->window_ms) {
        h->failures = 0;
        h->run_start_ms = now_ms;
    }

    h->failures++;

    if (h->failures >= (conf->failures ? conf->failures : 1)) {
        h->failures = 0;
        h->cooldowns++;
        h->cool_until_ms = now_ms + conf->cooldown_ms;
    }
}


int
kr_health_ok(const kr_health_t *h, uint64_t now_ms)
{
    return now_ms >= h->cool_until_ms;
}


uint32_t
kr_route_hash(const unsigned char *p, size_t len)
{
    size_t    i;
    uint32_t  h;

    /* FNV-1a, then a finaliser so that every bit depends on every byte */

    h = 2166136261u;

    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }

    h = kr_route_mix(h);

    return h ? h : 1;
}


static uint32_t
kr_route_mix(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;

    return h;
}


static uint64_t
kr_route_mul(uint64_t a, uint64_t b)
{
    if (a != 0 && b > UINT64_MAX / a) {
        return UINT64_MAX;
    }

    return a * b;
}


static uint64_t
kr_route_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}


/* appends while it fits; a cut explanation ends in "..." */

static void
kr_route_put(kr_route_buf_t *b, const char *s, size_t len)
{
    size_t  room;

    if (b->size == 0 || b->full) {
        return;
    }

    room = b->size - 1 - b->len;

    if (len > room) {
        b->full = 1;

        if (b->size > 4) {
            if (b->len > b->size - 4) {
                b->len = b->size - 4;
            }

            memcpy(b->p + b->len, "...", 3);
            b->len += 3;
        }

        b->p[b->len] = '\0';
        return;
    }

    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
}


static void
kr_route_puts(kr_route_buf_t *b, const char *s)
{
    kr_route_put(b, s, strlen(s));
}


static void
kr_route_put_usd(kr_route_buf_t *b, uint64_t pusd)
{
    size_t         len;
    unsigned char  usd[KR_USD_LEN];

    len = kr_usd_format(usd, pusd);
    kr_route_put(b, (const char *) usd, len);
}


static void
kr_route_put_provider(kr_route_buf_t *b, const kr_route_input_t *in,
    unsigned provider)
{
    char  num[16];

    if (in->provider_names != NULL && provider < in->n_providers
        && in->provider_names[provider].len)
    {
        kr_route_put(b, (const char *) in->provider_names[provider].data,
                     in->provider_names[provider].len);
        return;
    }

    snprintf(num, sizeof(num), "p%u", provider);
    kr_route_puts(b, num);
}
