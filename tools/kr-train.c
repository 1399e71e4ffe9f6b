
/*
 * Copyright (C) kroute authors
 */


/*
 * kr-train: fits the task-type classifier from labelled chat requests
 * (JSON lines with "task" and "messages") and writes the weights file the
 * gateway loads, and optionally the C source of the compiled-in default.
 * Multinomial logistic regression trained with AdaGrad and L2, classes
 * weighted to balance, fixed seed: the same input gives the same bytes.
 */


#define _POSIX_C_SOURCE  200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kr_tool.h"


typedef struct {
    uint32_t      *ids;
    float         *val;
    size_t         n;
} kr_train_vec_t;


typedef struct {
    unsigned       bits;
    unsigned       epochs;
    unsigned       holdout;
    unsigned       fold;
    unsigned long  seed;
    double         rate;
    double         l2;
    int            balance;
    int            verbose;
} kr_train_conf_t;


static void kr_train_usage(void);
static void kr_train_vectors(kr_tool_set_t *set, kr_train_vec_t *vec,
    unsigned bits);
static void kr_train_fit(const kr_train_conf_t *conf, kr_tool_set_t *set,
    kr_train_vec_t *vec, const unsigned char *use, float *w, float *bias);
static void kr_train_scores(const float *w, const float *bias,
    const kr_train_vec_t *v, double *s);
static int kr_train_emit_c(const char *path, const unsigned char *img,
    size_t size);


static void
kr_train_usage(void)
{
    fprintf(stderr,
        "usage: kr-train [options] TRAIN.jsonl\n"
        "  -o FILE      write the weights file\n"
        "  -c FILE      write the C source of the compiled-in default\n"
        "  -b BITS      log2 of hash buckets (default 16)\n"
        "  -e N         epochs (default 30)\n"
        "  -r RATE      AdaGrad learning rate (default 0.05)\n"
        "  -l L2        L2 penalty per example (default 3e-4)\n"
        "  -s SEED      shuffle seed (default 1)\n"
        "  -k K -f F    hold out rows with index %% K == F, report on them\n"
        "  -u           do not balance class weights\n"
        "  -v           per-task figures for the held-out rows\n");
}


static void
kr_train_vectors(kr_tool_set_t *set, kr_train_vec_t *vec, unsigned bits)
{
    size_t     i, j, n;
    uint32_t   ids[KR_CLASSIFY_FEATURES_MAX];
    float      value[KR_CLASSIFY_NS_N];

    for (i = 0; i < set->n; i++) {
        n = kr_classify_features(&set->rows[i].in, bits, ids,
                                 KR_CLASSIFY_FEATURES_MAX, value);

        vec[i].n = n;
        vec[i].ids = malloc(n * sizeof(uint32_t) + 1);
        vec[i].val = malloc(n * sizeof(float) + 1);

        if (vec[i].ids == NULL || vec[i].val == NULL) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }

        for (j = 0; j < n; j++) {
            vec[i].ids[j] = KR_CLASSIFY_BUCKET(ids[j]);
            vec[i].val[j] = value[KR_CLASSIFY_NS(ids[j])];
        }
    }
}


static void
kr_train_scores(const float *w, const float *bias, const kr_train_vec_t *v,
    double *s)
{
    int           c;
    size_t        j;
    const float  *row;

    for (c = 0; c < KR_TASK_N; c++) {
        s[c] = bias[c];
    }

    for (j = 0; j < v->n; j++) {
        row = w + (size_t) v->ids[j] * KR_TASK_N;

        for (c = 0; c < KR_TASK_N; c++) {
            s[c] += v->val[j] * row[c];
        }
    }
}


static void
kr_train_fit(const kr_train_conf_t *conf, kr_tool_set_t *set,
    kr_train_vec_t *vec, const unsigned char *use, float *w, float *bias)
{
    int             c;
    size_t          i, j, k, t, m, nb, *order;
    float          *g2, *row, *grow, gb2[KR_TASK_N];
    double          s[KR_TASK_N], max, sum, d, cw[KR_TASK_N], ex;
    unsigned        e;
    unsigned long   rnd, count[KR_TASK_N];
    kr_train_vec_t *v;

    nb = (size_t) KR_TASK_N << conf->bits;

    g2 = calloc(nb, sizeof(float));
    order = malloc(set->n * sizeof(size_t));
    if (g2 == NULL || order == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }

    memset(count, 0, sizeof(count));
    m = 0;

    for (i = 0; i < set->n; i++) {
        if (use[i]) {
            order[m++] = i;
            count[set->rows[i].task]++;
        }
    }

    for (c = 0; c < KR_TASK_N; c++) {
        cw[c] = (conf->balance && count[c])
                ? (double) m / (KR_TASK_N * count[c]) : 1.0;
        gb2[c] = 0.0f;
    }

    rnd = conf->seed;

    for (e = 0; e < conf->epochs; e++) {

        /* Fisher-Yates with a fixed linear congruential generator */

        for (i = m; i > 1; i--) {
            rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
            k = (size_t) ((rnd >> 33) % i);
            t = order[i - 1];
            order[i - 1] = order[k];
            order[k] = t;
        }

        for (i = 0; i < m; i++) {
            v = &vec[order[i]];
            kr_train_scores(w, bias, v, s);

            max = s[0];
            for (c = 1; c < KR_TASK_N; c++) {
                if (s[c] > max) {
                    max = s[c];
                }
            }

            sum = 0.0;
            for (c = 0; c < KR_TASK_N; c++) {
                s[c] = exp(s[c] - max);
                sum += s[c];
            }

            ex = cw[set->rows[order[i]].task];

            for (c = 0; c < KR_TASK_N; c++) {
                s[c] = ex * (s[c] / sum
                             - (c == set->rows[order[i]].task ? 1.0 : 0.0));

                gb2[c] += (float) (s[c] * s[c]);
                bias[c] -= (float) (conf->rate * s[c]
                                    / (sqrt(gb2[c]) + 1e-6));
            }

            for (j = 0; j < v->n; j++) {
                row = w + (size_t) v->ids[j] * KR_TASK_N;
                grow = g2 + (size_t) v->ids[j] * KR_TASK_N;

                for (c = 0; c < KR_TASK_N; c++) {
                    d = s[c] * v->val[j] + conf->l2 * row[c];
                    grow[c] += (float) (d * d);
                    row[c] -= (float) (conf->rate * d
                                       / (sqrt(grow[c]) + 1e-6));
                }
            }
        }
    }

    free(g2);
    free(order);
}


static int
kr_train_emit_c(const char *path, const unsigned char *img, size_t size)
{
    FILE    *fp;
    size_t   i;

    fp = fopen(path, "w");
    if (fp == NULL) {
        fprintf(stderr, "cannot open \"%s\"\n", path);
        return -1;
    }

    fprintf(fp,
        "\n/*\n * Copyright (C) kroute authors\n */\n\n\n"
        "/*\n"
        " * Compiled-in default classifier weights, generated by kr-train\n"
        " * (make weights) from the labelled prompts; the bytes are the\n"
        " * weights file image, see docs/classifier.md.  Do not edit.\n"
        " * Trained on data including databricks-dolly-15k (CC BY-SA 3.0)\n"
        " * and the BELLE evaluation set (ODC-By): see docs/classifier.md\n"
        " * for attribution.\n"
        " */\n\n\n"
        "#include \"kr_classify.h\"\n\n\n"
        "const size_t  kr_classify_default_image_size = %zu;\n\n"
        "const unsigned char  kr_classify_default_image[%zu] = {",
        size, size);

    for (i = 0; i < size; i++) {
        fprintf(fp, "%s%u,", i % 18 == 0 ? "\n    " : "", img[i]);
    }

    fprintf(fp, "\n};\n");

    if (fclose(fp) != 0) {
        fprintf(stderr, "cannot write \"%s\"\n", path);
        return -1;
    }

    return 0;
}


int
main(int argc, char **argv)
{
    int                    c, o, pred;
    FILE                  *fp;
    char                  *out, *cout, err[256];
    size_t                 i, nb, size;
    float                 *w, bias[KR_TASK_N], max;
    double                 s[KR_TASK_N];
    int8_t                *q;
    unsigned char         *use, *img;
    kr_tool_set_t          set;
    kr_train_vec_t        *vec;
    kr_train_conf_t        conf;
    kr_classifier_t       *cls;
    kr_classify_result_t   res;
    kr_classifier_image_t  image;
    kr_tool_confusion_t    cmf, cmq;

    memset(&conf, 0, sizeof(conf));
    conf.bits = 16;
    conf.epochs = 30;
    conf.rate = 0.05;
    conf.l2 = 3e-4;
    conf.seed = 1;
    conf.balance = 1;
    out = NULL;
    cout = NULL;

    while ((o = getopt(argc, argv, "o:c:b:e:r:l:s:k:f:uvh")) != -1) {
        switch (o) {
        case 'o': out = optarg; break;
        case 'c': cout = optarg; break;
        case 'b': conf.bits = (unsigned) atoi(optarg); break;
        case 'e': conf.epochs = (unsigned) atoi(optarg); break;
        case 'r': conf.rate = atof(optarg); break;
        case 'l': conf.l2 = atof(optarg); break;
        case 's': conf.seed = strtoul(optarg, NULL, 10); break;
        case 'k': conf.holdout = (unsigned) atoi(optarg); break;
        case 'f': conf.fold = (unsigned) atoi(optarg); break;
        case 'u': conf.balance = 0; break;
        case 'v': conf.verbose = 1; break;
        default: kr_train_usage(); return 2;
        }
    }

    if (optind + 1 != argc || conf.bits < KR_CLASSIFY_BITS_MIN
        || conf.bits > KR_CLASSIFY_BITS_MAX)
    {
        kr_train_usage();
        return 2;
    }

    memset(&set, 0, sizeof(set));

    if (kr_tool_read(&set, argv[optind]) != 0) {
        return 1;
    }

    vec = calloc(set.n, sizeof(kr_train_vec_t));
    use = malloc(set.n);
    nb = (size_t) KR_TASK_N << conf.bits;
    w = calloc(nb, sizeof(float));
    q = malloc(nb);

    if (vec == NULL || use == NULL || w == NULL || q == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    kr_train_vectors(&set, vec, conf.bits);

    for (i = 0; i < set.n; i++) {
        use[i] = conf.holdout == 0 || i % conf.holdout != conf.fold;
    }

    memset(bias, 0, sizeof(bias));
    kr_train_fit(&conf, &set, vec, use, w, bias);

    /* quantise to int8 with one scale */

    max = 0.0f;
    for (i = 0; i < nb; i++) {
        if (fabsf(w[i]) > max) {
            max = fabsf(w[i]);
        }
    }

    image.bits = conf.bits;
    image.scale = max > 0.0f ? max / 127.0f : 1.0f;
    memcpy(image.bias, bias, sizeof(bias));

    for (i = 0; i < nb; i++) {
        q[i] = (int8_t) lrintf(w[i] / image.scale);
    }

    image.weights = q;

    size = kr_classifier_image_size(conf.bits);
    img = malloc(size);
    if (img == NULL || kr_classifier_image_write(&image, img, size) != size)
    {
        fprintf(stderr, "cannot build the weights image\n");
        return 1;
    }

    cls = kr_classifier_from_memory(img, size, err, sizeof(err));
    if (cls == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }

    if (conf.holdout) {
        memset(&cmf, 0, sizeof(cmf));
        memset(&cmq, 0, sizeof(cmq));

        for (i = 0; i < set.n; i++) {
            if (use[i]) {
                continue;
            }

            kr_train_scores(w, bias, &vec[i], s);
            pred = 0;
            for (c = 1; c < KR_TASK_N; c++) {
                if (s[c] > s[pred]) {
                    pred = c;
                }
            }

            cmf.m[set.rows[i].task][pred]++;
            cmf.n++;

            pred = kr_classify(cls, &set.rows[i].in, &res);
            cmq.m[set.rows[i].task][pred]++;
            cmq.n++;
        }

        printf("held out, float weights: ");
        kr_tool_report(&cmf, stdout, 0);
        printf("held out, int8 weights:  ");
        kr_tool_report(&cmq, stdout, conf.verbose);
    }

    if (out) {
        fp = fopen(out, "wb");
        if (fp == NULL || fwrite(img, 1, size, fp) != size
            || fclose(fp) != 0)
        {
            fprintf(stderr, "cannot write \"%s\"\n", out);
            return 1;
        }
    }

    if (cout && kr_train_emit_c(cout, img, size) != 0) {
        return 1;
    }

    kr_classifier_free(cls);

    return 0;
}
