
/*
 * Copyright (C) kroute authors
 */


/*
 * Task-type classifier for chat-completion requests.  It reads the
 * instruction (system prompt, first and last sentences of the last user
 * message), the pasted body and a few structural hints, and scores each
 * task type with a multinomial logistic regression over hashed n-gram
 * features.  Routing picks the cheapest model that is good enough for the
 * task it returns.  Weights come from a file written by kr-train or from
 * the compiled-in default.  kr_classify() never allocates and reads a
 * bounded part of its input, whatever the message size.
 */


#ifndef _KR_CLASSIFY_H_INCLUDED_
#define _KR_CLASSIFY_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* task types; the indices are part of the weights file format */
#define KR_TASK_CLASSIFICATION   0
#define KR_TASK_EXTRACTION       1
#define KR_TASK_SUMMARIZATION    2
#define KR_TASK_REWRITE          3
#define KR_TASK_GENERATION       4
#define KR_TASK_QA               5
#define KR_TASK_CODE             6
#define KR_TASK_REASONING        7
#define KR_TASK_N                8

/*
 * Callers pass at most the first KR_CLASSIFY_HEAD_MAX and the last
 * KR_CLASSIFY_TAIL_MAX bytes of the user message, joined by "\n";
 * longer input is clipped the same way internally.  The system prompt
 * is read up to KR_CLASSIFY_SYSTEM_MAX bytes.
 */
#define KR_CLASSIFY_HEAD_MAX     1024
#define KR_CLASSIFY_TAIL_MAX     1024
#define KR_CLASSIFY_SYSTEM_MAX   1024

/* upper bound of features extracted from one request */
#define KR_CLASSIFY_FEATURES_MAX 8192

/* version of the feature extractor, recorded in weights files */
#define KR_CLASSIFY_FEATURES_VERSION  1

/* feature namespaces: an id is (namespace << 24) | bucket */
#define KR_CLASSIFY_NS_N         10
#define KR_CLASSIFY_NS(id)       ((id) >> 24)
#define KR_CLASSIFY_BUCKET(id)   ((id) & 0xffffff)


typedef struct kr_classifier_s  kr_classifier_t;


typedef struct {
    const unsigned char  *system;        /* decoded system prompt */
    size_t                system_len;
    const unsigned char  *user;          /* decoded last user message */
    size_t                user_len;
    size_t                context_tokens;  /* estimate, whole request */
    unsigned              messages;      /* number of messages */
    unsigned              has_tools;     /* tools or functions given */
    unsigned              json_format;   /* JSON response format asked */
} kr_classify_input_t;


typedef struct {
    int                   task;          /* best task index */
    float                 prob;          /* its softmax probability */
    float                 scores[KR_TASK_N];  /* logits per task */
} kr_classify_result_t;


const char *kr_task_name(int task);
int kr_task_index(const char *name, size_t len);

kr_classifier_t *kr_classifier_load(const char *path, char *err,
    size_t errlen);
void kr_classifier_free(kr_classifier_t *cls);
const kr_classifier_t *kr_classifier_default(void);

/* returns the task index, or -1 on bad arguments */
int kr_classify(const kr_classifier_t *cls, const kr_classify_input_t *in,
    kr_classify_result_t *res);

/*
 * Feature extraction shared by inference and the trainer: fills ids[]
 * with up to max feature ids for a table of 2^bits buckets, and
 * value[ns] with the value each occurrence in namespace ns carries.
 * Returns the number of ids.
 */
size_t kr_classify_features(const kr_classify_input_t *in, unsigned bits,
    uint32_t *ids, size_t max, float value[KR_CLASSIFY_NS_N]);

/*
 * Weights image (the file format, see docs/classifier.md) as kr-train
 * writes it and the loader reads it.  weights[] holds 2^bits rows of
 * KR_TASK_N int8 weights; a real weight is weights[i] * scale.
 */
#define KR_CLASSIFY_MAGIC        "KRCW"
#define KR_CLASSIFY_FORMAT       1
#define KR_CLASSIFY_BITS_MIN     10
#define KR_CLASSIFY_BITS_MAX     20

typedef struct {
    unsigned              bits;
    float                 scale;
    float                 bias[KR_TASK_N];
    const int8_t         *weights;
} kr_classifier_image_t;

size_t kr_classifier_image_size(unsigned bits);
size_t kr_classifier_image_write(const kr_classifier_image_t *img,
    unsigned char *buf, size_t size);
int kr_classifier_image_parse(kr_classifier_image_t *img,
    const unsigned char *buf, size_t size, char *err, size_t errlen);

/* a classifier over an image in caller memory, kept alive by the caller */
kr_classifier_t *kr_classifier_from_memory(const unsigned char *buf,
    size_t size, char *err, size_t errlen);

/* the compiled-in default image (src/kr_classify_weights.c, generated) */
extern const unsigned char  kr_classify_default_image[];
extern const size_t         kr_classify_default_image_size;


#endif /* _KR_CLASSIFY_H_INCLUDED_ */
