
/*
 * Copyright (C) kroute authors
 */


/*
 * Unit tests of the task-type classifier: labels of clear hand-written
 * prompts of every task type, weights file errors (missing, bad magic,
 * truncated, corrupted, wrong version), the compiled-in default being the
 * shipped weights file, and bounded input handling.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kr_classify.h"
#include "tap.h"


#define WEIGHTS  "conf-examples/kroute-classifier.weights"


typedef struct {
    int          task;
    const char  *system;
    const char  *user;
} t_prompt_t;


static const t_prompt_t  prompts[] = {

    { KR_TASK_CLASSIFICATION, NULL,
      "Classify this customer review as positive, negative or neutral: "
      "\"The blender broke after two days and support never answered.\"" },
    { KR_TASK_CLASSIFICATION, NULL,
      "Is the following email spam or not spam? Answer with one word.\n\n"
      "Congratulations! You have won a free cruise. Click here to claim." },
    { KR_TASK_CLASSIFICATION, NULL,
      "Categorize each animal as a mammal, bird or fish: salmon, eagle, "
      "dolphin, sparrow, tuna" },

    { KR_TASK_EXTRACTION, NULL,
      "Extract every company name mentioned in the text below and return "
      "them as a comma separated list.\n\nShares of Siemens rose after "
      "the firm signed a deal with Alstom, while Bosch fell." },
    { KR_TASK_EXTRACTION, NULL,
      "From the following invoice, pull out the invoice number, the date "
      "and the total amount.\n\nInvoice 4471, issued 3 March 2024 to "
      "Harbor Tools Ltd. Total due: 1,250.00 EUR." },

    { KR_TASK_SUMMARIZATION, NULL,
      "Summarize the following article in three sentences.\n\nThe city "
      "council voted on Tuesday to close the old bridge for repairs. "
      "Engineers found cracks in two of its supports last spring. Traffic "
      "will be diverted over the northern ring road for six months, and "
      "buses will run more often to make up for the longer route." },
    { KR_TASK_SUMMARIZATION, NULL,
      "The meeting covered the budget, the hiring freeze and the new "
      "office. Finance wants cuts of ten percent. HR asked to keep two "
      "open positions. The move is delayed to autumn.\n\n"
      "Give me a short summary of the meeting notes above." },

    { KR_TASK_REWRITE, NULL,
      "Translate the following sentence into German: The train to Berlin "
      "leaves at seven in the morning." },
    { KR_TASK_REWRITE, NULL,
      "Rewrite this message so it sounds more polite:\n\nSend me the "
      "report now, you are late again." },
    { KR_TASK_REWRITE, NULL,
      "请把下面这段话翻译成英文："
      "今天天气很好，我们去公园散步吧。" },

    { KR_TASK_GENERATION, NULL,
      "Write a short poem about autumn leaves falling in an empty park." },
    { KR_TASK_GENERATION, NULL,
      "Brainstorm ten names for a small bakery that sells sourdough "
      "bread." },
    { KR_TASK_GENERATION, NULL,
      "Write a story for children about a brave little turtle." },

    { KR_TASK_QA, NULL,
      "Why is the sky blue?" },
    { KR_TASK_QA, NULL,
      "Who was the first person to walk on the moon?" },
    { KR_TASK_QA, NULL,
      "What are the health benefits of drinking green tea?" },

    { KR_TASK_CODE, NULL,
      "Write a Python function that returns the n-th Fibonacci number." },
    { KR_TASK_CODE, NULL,
      "Why does this C code crash?\n\n```c\nint main(void) {\n    char "
      "*p = NULL;\n    p[0] = 'a';\n    return 0;\n}\n```" },
    { KR_TASK_CODE, NULL,
      "Implement a function in JavaScript that removes duplicate values "
      "from an array." },

    { KR_TASK_REASONING, NULL,
      "A farmer has 17 sheep. He buys 5 more and then sells 8. Each sheep "
      "costs $40 to feed per month. How much does he spend on feed each "
      "month now?" },
    { KR_TASK_REASONING, NULL,
      "A shop sells pens at 3 for $2. How many dollars do 24 pens cost, "
      "and how many pens can I buy with $10?" },
    { KR_TASK_REASONING, NULL,
      "Tom is 4 years older than Anna. In 6 years the sum of their ages "
      "will be 40. How old is Anna now?" }
};


static void
t_input(kr_classify_input_t *in, const char *system, const char *user)
{
    memset(in, 0, sizeof(*in));

    in->system = (const unsigned char *) system;
    in->system_len = system ? strlen(system) : 0;
    in->user = (const unsigned char *) user;
    in->user_len = user ? strlen(user) : 0;
    in->messages = system ? 2 : 1;
    in->context_tokens = (in->system_len + in->user_len) / 4;
}


static unsigned char *
t_read(const char *path, size_t *len)
{
    long            n;
    FILE           *fp;
    unsigned char  *buf;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        return NULL;
    }

    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    fseek(fp, 0, SEEK_SET);

    buf = malloc(n > 0 ? (size_t) n : 1);
    if (buf == NULL || fread(buf, 1, (size_t) n, fp) != (size_t) n) {
        free(buf);
        fclose(fp);
        return NULL;
    }

    fclose(fp);
    *len = (size_t) n;

    return buf;
}


static int
t_write(const char *path, const unsigned char *buf, size_t len)
{
    FILE  *fp;

    fp = fopen(path, "wb");
    if (fp == NULL) {
        return -1;
    }

    if (fwrite(buf, 1, len, fp) != len) {
        fclose(fp);
        return -1;
    }

    return fclose(fp);
}


static void
t_load_error(const char *path, const unsigned char *buf, size_t len,
    const char *what, const char *expect)
{
    char              err[256];
    kr_classifier_t  *cls;

    err[0] = '\0';

    if (t_write(path, buf, len) != 0) {
        ok(0, "%s: write temporary file", what);
        return;
    }

    cls = kr_classifier_load(path, err, sizeof(err));
    ok(cls == NULL, "%s: rejected", what);
    ok(strstr(err, expect) != NULL, "%s: error names it (%s)", what, err);

    kr_classifier_free(cls);
}


int
main(void)
{
    int                     i, n, pred, same;
    char                    err[256], tmp[64], *big;
    size_t                  len, k;
    unsigned char          *file, *bad;
    kr_classifier_t        *loaded;
    kr_classify_input_t     in;
    kr_classify_result_t    r1, r2;
    const kr_classifier_t  *def;

    /* names */

    is_int(KR_TASK_N, 8, "eight task types");
    is_str(kr_task_name(KR_TASK_QA), "qa", "name of qa");
    is_str(kr_task_name(KR_TASK_N), "unknown", "name out of range");
    is_int(kr_task_index("reasoning", 9), KR_TASK_REASONING, "index");
    is_int(kr_task_index("chat", 4), -1, "unknown name");

    for (i = 0; i < KR_TASK_N; i++) {
        if (kr_task_index(kr_task_name(i), strlen(kr_task_name(i))) != i) {
            break;
        }
    }

    is_int(i, KR_TASK_N, "names and indices round trip");

    /* the compiled-in default */

    def = kr_classifier_default();
    ok(def != NULL, "compiled-in default weights parse");

    if (def == NULL) {
        return tap_done();
    }

    n = (int) (sizeof(prompts) / sizeof(prompts[0]));

    for (i = 0; i < n; i++) {
        t_input(&in, prompts[i].system, prompts[i].user);
        pred = kr_classify(def, &in, &r1);

        ok(pred == prompts[i].task, "%s (got %s %.2f): %.50s",
           kr_task_name(prompts[i].task), kr_task_name(pred), r1.prob,
           prompts[i].user);
    }

    ok(r1.prob > 0.0f && r1.prob <= 1.0f, "probability in range");
    ok(r1.task == pred, "result holds the task");

    /* the shipped weights file is the compiled-in default */

    file = t_read(WEIGHTS, &len);
    ok(file != NULL, "read " WEIGHTS);

    if (file == NULL) {
        return tap_done();
    }

    ok(len == kr_classify_default_image_size
       && memcmp(file, kr_classify_default_image, len) == 0,
       "file bytes equal the compiled-in image");

    loaded = kr_classifier_load(WEIGHTS, err, sizeof(err));
    ok(loaded != NULL, "load " WEIGHTS);

    if (loaded) {
        same = 1;

        for (i = 0; i < n; i++) {
            t_input(&in, prompts[i].system, prompts[i].user);
            kr_classify(def, &in, &r1);
            kr_classify(loaded, &in, &r2);

            if (r1.task != r2.task
                || memcmp(r1.scores, r2.scores, sizeof(r1.scores)) != 0)
            {
                same = 0;
            }
        }

        ok(same, "file weights and default give the same predictions");
    }

    kr_classifier_free(loaded);

    /* load errors */

    loaded = kr_classifier_load("t/fixtures/no-such-weights", err,
                                sizeof(err));
    ok(loaded == NULL, "missing file rejected");
    ok(strstr(err, "cannot open") != NULL, "missing file error (%s)", err);

    snprintf(tmp, sizeof(tmp), "/tmp/kr-classify-%ld.weights",
             (long) getpid());

    bad = malloc(len);
    if (bad == NULL) {
        return tap_done();
    }

    memcpy(bad, file, len);
    memcpy(bad, "GIF8", 4);
    t_load_error(tmp, bad, len, "bad magic", "bad magic");

    t_load_error(tmp, file, len - 100, "truncated file", "truncated");
    t_load_error(tmp, file, 10, "short file", "truncated");
    t_load_error(tmp, file, 0, "empty file", "truncated");

    memcpy(bad, file, len);
    bad[len / 2] ^= 0x55;
    t_load_error(tmp, bad, len, "corrupted file", "checksum");

    memcpy(bad, file, len);
    bad[4] = 9;
    t_load_error(tmp, bad, len, "format version", "version");

    memcpy(bad, file, len);
    bad[8] = 99;
    t_load_error(tmp, bad, len, "feature version", "feature version");

    unlink(tmp);
    free(bad);
    free(file);

    /* bounds */

    ok(kr_classify(NULL, &in, &r1) == -1, "no classifier: -1");
    ok(kr_classify(def, NULL, &r1) == -1, "no input: -1");

    t_input(&in, NULL, NULL);
    pred = kr_classify(def, &in, &r1);
    ok(pred >= 0 && pred < KR_TASK_N, "empty request classified");

    t_input(&in, NULL, "\xff\xfe\xc3 \xe4\xb8 broken \xf0\x9f utf-8 \x80");
    pred = kr_classify(def, &in, &r1);
    ok(pred >= 0 && pred < KR_TASK_N, "invalid UTF-8 classified");

    big = malloc(200 * 1024 + 1);
    if (big == NULL) {
        return tap_done();
    }

    strcpy(big, "Summarize the following report in two sentences.\n\n");

    for (k = strlen(big); k < 200 * 1024; k++) {
        big[k] = "lorem ipsum dolor sit amet. "[k % 28];
    }

    big[k] = '\0';

    t_input(&in, NULL, big);
    pred = kr_classify(def, &in, &r1);
    ok(pred >= 0 && pred < KR_TASK_N, "200 KB message classified (%s)",
       kr_task_name(pred));

    in.user_len = KR_CLASSIFY_HEAD_MAX + KR_CLASSIFY_TAIL_MAX + 1;
    memcpy(big + KR_CLASSIFY_HEAD_MAX, "\n", 1);
    memmove(big + KR_CLASSIFY_HEAD_MAX + 1,
            big + 200 * 1024 - KR_CLASSIFY_TAIL_MAX, KR_CLASSIFY_TAIL_MAX);
    kr_classify(def, &in, &r2);
    ok(r2.task == r1.task, "caller-clipped head and tail: same task");

    free(big);

    return tap_done();
}
