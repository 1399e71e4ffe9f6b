
/*
 * Copyright (C) kroute authors
 */


/*
 * kr-eval: measures the task-type classifier on labelled chat requests
 * (JSON lines): accuracy, macro-F1, per-task precision, recall and F1 and
 * the confusion matrix, overall and split into synthetic and real rows;
 * or, with -b, the time one classification takes.
 */


#define _POSIX_C_SOURCE  200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kr_tool.h"


static void kr_eval_usage(void);
static double kr_eval_now(void);
static double kr_eval_bench_one(const kr_classifier_t *cls,
    const kr_classify_input_t *in, unsigned long iter);
static void kr_eval_bench(const kr_classifier_t *cls, kr_tool_set_t *set);


static void
kr_eval_usage(void)
{
    fprintf(stderr,
        "usage: kr-eval [-w WEIGHTS] [-s] [-m] [-b] DATA.jsonl\n"
        "  -w FILE   weights file (default: the compiled-in weights)\n"
        "  -s        also report synthetic and real rows separately\n"
        "  -m        print the misclassified rows\n"
        "  -b        print microseconds per classification\n");
}


static double
kr_eval_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);

    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}


static double
kr_eval_bench_one(const kr_classifier_t *cls, const kr_classify_input_t *in,
    unsigned long iter)
{
    double                 t;
    unsigned long          i;
    volatile int           sink;
    kr_classify_result_t   res;

    sink = 0;
    t = kr_eval_now();

    for (i = 0; i < iter; i++) {
        sink += kr_classify(cls, in, &res);
    }

    (void) sink;

    return (kr_eval_now() - t) / iter;
}


static void
kr_eval_bench(const kr_classifier_t *cls, kr_tool_set_t *set)
{
    char                 *text;
    size_t                i, len, total;
    double                t;
    kr_classify_input_t   in;

    /* a 2 KB and a 200 KB prompt made of the data's own text */

    text = malloc(200 * 1024 + 1);
    if (text == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }

    total = 0;

    for (i = 0; total < 200 * 1024; i = (i + 1) % set->n) {
        len = set->rows[i].in.user_len;
        if (len > 200 * 1024 - total) {
            len = 200 * 1024 - total;
        }

        memcpy(text + total, set->rows[i].user, len);
        total += len;

        if (total < 200 * 1024) {
            text[total++] = '\n';
        }
    }

    memset(&in, 0, sizeof(in));
    in.user = (const unsigned char *) text;
    in.messages = 1;

    in.user_len = 2048;
    in.context_tokens = 512;
    printf("2 KB prompt:   %.2f us\n", kr_eval_bench_one(cls, &in, 200000));

    in.user_len = 200 * 1024;
    in.context_tokens = 51200;
    printf("200 KB prompt: %.2f us\n", kr_eval_bench_one(cls, &in, 200000));

    t = kr_eval_now();

    for (i = 0; i < 20 * set->n; i++) {
        kr_eval_bench_one(cls, &set->rows[i % set->n].in, 1);
    }

    printf("data rows:     %.2f us mean\n",
           (kr_eval_now() - t) / (20 * set->n));

    free(text);
}


int
main(int argc, char **argv)
{
    int                     o, pred, split, bench, misses;
    char                   *weights, err[256];
    size_t                  i;
    kr_tool_set_t           set;
    kr_classifier_t        *loaded;
    kr_tool_row_t          *r;
    kr_classify_result_t    res;
    kr_tool_confusion_t     all, syn, real;
    const kr_classifier_t  *cls;

    weights = NULL;
    split = 0;
    bench = 0;
    misses = 0;

    while ((o = getopt(argc, argv, "w:smbh")) != -1) {
        switch (o) {
        case 'w': weights = optarg; break;
        case 's': split = 1; break;
        case 'm': misses = 1; break;
        case 'b': bench = 1; break;
        default: kr_eval_usage(); return 2;
        }
    }

    if (optind + 1 != argc) {
        kr_eval_usage();
        return 2;
    }

    loaded = NULL;

    if (weights) {
        loaded = kr_classifier_load(weights, err, sizeof(err));
        if (loaded == NULL) {
            fprintf(stderr, "kr-eval: %s\n", err);
            return 1;
        }

        cls = loaded;

    } else {
        cls = kr_classifier_default();
        if (cls == NULL) {
            fprintf(stderr, "kr-eval: no compiled-in weights\n");
            return 1;
        }
    }

    memset(&set, 0, sizeof(set));

    if (kr_tool_read(&set, argv[optind]) != 0) {
        return 1;
    }

    if (bench) {
        kr_eval_bench(cls, &set);
        kr_classifier_free(loaded);
        return 0;
    }

    memset(&all, 0, sizeof(all));
    memset(&syn, 0, sizeof(syn));
    memset(&real, 0, sizeof(real));

    for (i = 0; i < set.n; i++) {
        r = &set.rows[i];
        pred = kr_classify(cls, &r->in, &res);

        all.m[r->task][pred]++;
        all.n++;

        if (r->synthetic) {
            syn.m[r->task][pred]++;
            syn.n++;

        } else {
            real.m[r->task][pred]++;
            real.n++;
        }

        if (misses && pred != r->task) {
            printf("row %zu: %s -> %s (%.2f): %.100s\n", i,
                   kr_task_name(r->task), kr_task_name(pred), res.prob,
                   r->user);
        }
    }

    kr_tool_report(&all, stdout, 1);

    if (split) {
        printf("synthetic: ");
        kr_tool_report(&syn, stdout, 0);
        printf("real:      ");
        kr_tool_report(&real, stdout, 0);
    }

    kr_classifier_free(loaded);

    return 0;
}
