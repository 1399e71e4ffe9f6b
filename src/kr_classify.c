
/*
 * Copyright (C) kroute authors
 */


/*
 * Task-type classifier inference.  The request is turned into hashed
 * features in separate namespaces: words and word pairs of the whole
 * (clipped) user message, of its first and last sentences, of the system
 * prompt, character trigrams of the instruction sentences, cue words and
 * structural buckets.  Each namespace is normalised on its own, so that
 * a long pasted text cannot drown out a short instruction.  A linear
 * model with int8 weights scores the task types.
 */


#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kr_classify.h"


/* namespaces */
#define KR_NS_BODY        0
#define KR_NS_BODY2       1
#define KR_NS_HEAD        2
#define KR_NS_HEAD2       3
#define KR_NS_TAIL        4
#define KR_NS_TAIL2       5
#define KR_NS_CHAR        6
#define KR_NS_SYS         7
#define KR_NS_CUE         8
#define KR_NS_STRUCT      9

/* bytes of the first and last sentences read as the instruction */
#define KR_CLS_INSTR_MAX  240

/* bytes of the start and of the end of the message read as the body */
#define KR_CLS_BODY_MAX   256

#define KR_CLS_HDR_SIZE   56
#define KR_CLS_FNV_BASIS  2166136261u
#define KR_CLS_FNV_PRIME  16777619u


struct kr_classifier_s {
    kr_classifier_image_t   img;
    unsigned char          *owned;
};


/*
 * Features go either to ids[] (the trainer) or, when acc is set,
 * straight into per-namespace sums of the weight rows (inference), so
 * that kr_classify() reads each row once while it hashes.  size_t
 * fields: stores through ids and acc cannot alias them.
 */
typedef struct {
    uint32_t               *ids;
    int32_t               (*acc)[KR_TASK_N];
    const int8_t           *weights;
    size_t                  n;
    size_t                  max;
    size_t                  shift;
    size_t                  count[KR_CLASSIFY_NS_N];
} kr_cls_feat_t;


typedef struct {
    size_t                  bytes;
    size_t                  code;
    size_t                  digits;
    size_t                  math;
    size_t                  lines;
    size_t                  cjk;
    unsigned                fence;
} kr_cls_stats_t;


/* the tokens of one pass: the last one, the first non-zero one, count */
typedef struct {
    uint32_t                prev;
    uint32_t                first;
    size_t                  n;
} kr_cls_run_t;


static inline uint32_t kr_cls_mix(uint32_t h);
static void kr_cls_tables(void);
static inline void kr_cls_emit(kr_cls_feat_t *f, unsigned ns, uint32_t h);
static inline void kr_cls_token(kr_cls_feat_t *f, unsigned ns1,
    unsigned ns2, uint32_t tok, kr_cls_run_t *r);
static uint32_t kr_cls_str_hash(const char *s);
static inline size_t kr_cls_decode(const unsigned char *p,
    const unsigned char *end, uint32_t *cp);
static inline unsigned kr_cls_uclass(uint32_t c);
static void kr_cls_words(kr_cls_feat_t *f, const unsigned char *p,
    const unsigned char *end, unsigned ns1, unsigned ns2,
    kr_cls_stats_t *st, uint32_t *first, uint32_t *last);
static void kr_cls_chars(kr_cls_feat_t *f, const unsigned char *p,
    const unsigned char *end);
static inline int kr_cls_sentence_end(const unsigned char *p,
    const unsigned char *end, uint32_t c);
static const unsigned char *kr_cls_head(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *kr_cls_tail(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *kr_cls_boundary(const unsigned char *p,
    const unsigned char *start, const unsigned char *end);
static unsigned kr_cls_log2(size_t v);
static void kr_cls_struct(kr_cls_feat_t *f, const char *name, unsigned v);
static size_t kr_cls_extract(kr_cls_feat_t *f, const kr_classify_input_t *in,
    float value[KR_CLASSIFY_NS_N]);
static uint32_t kr_cls_get32(const unsigned char *p);
static void kr_cls_put32(unsigned char *p, uint32_t v);
static uint32_t kr_cls_fnv(const unsigned char *p, size_t len);


static const char  *kr_task_names[KR_TASK_N] = {
    "classification",
    "extraction",
    "summarization",
    "rewrite",
    "generation",
    "qa",
    "code",
    "reasoning"
};


/* hash seeds: the system prompt shares the instruction buckets */
static const uint32_t  kr_cls_seed[KR_CLASSIFY_NS_N] = {
    0x1b873593, 0x85ebca6b, 0xc2b2ae35, 0xc2b2ae35, 0x27d4eb2f,
    0x27d4eb2f, 0x165667b1, 0xc2b2ae35, 0x9e3779b1, 0x7feb352d
};


/* weight of a namespace, spread over its occurrences */
static const float  kr_cls_ns_weight[KR_CLASSIFY_NS_N] = {
    1.0f, 0.5f, 1.0f, 0.7f, 1.0f, 0.7f, 1.0f, 0.7f, 1.0f, 1.0f
};


/*
 * Byte classes, folding and statistics increments, filled on first use
 * (at configuration time in the gateway; refilling gives the same
 * bytes).  A byte of KR_CLS_UTF8 starts or continues a multi-byte
 * character and takes the slow path; every other byte is one character.
 * The fold gives the character the word hash and the trigrams read:
 * lower case, '0' for digits, ' ' for line breaks and tabs.
 */
#define KR_CLS_WORD       0x01
#define KR_CLS_UTF8       0x02
#define KR_CLS_END        0x04
#define KR_CLS_SPACE      0x08
#define KR_CLS_CJK        0x10

/*
 * kr_cls_stat[] packs the digit, code, math and line counts a byte adds
 * into 16-bit fields, so the tokeniser counts them with one addition per
 * byte instead of a branch per kind; a pass reads at most
 * KR_CLASSIFY_SYSTEM_MAX bytes, far below a field's range.
 */
#define KR_CLS_ST_DIGIT   0
#define KR_CLS_ST_CODE    16
#define KR_CLS_ST_MATH    32
#define KR_CLS_ST_LINE    48
#define KR_CLS_ST_FIELD(s, f)  ((size_t) (((s) >> (f)) & 0xffff))

static unsigned char    kr_cls_class[256];
static unsigned char    kr_cls_fold[256];
static uint64_t         kr_cls_stat[256];
static int              kr_cls_tables_ready;

static kr_classifier_t  kr_cls_default;
static int              kr_cls_default_state;


const char *
kr_task_name(int task)
{
    if (task < 0 || task >= KR_TASK_N) {
        return "unknown";
    }

    return kr_task_names[task];
}


int
kr_task_index(const char *name, size_t len)
{
    int  i;

    for (i = 0; i < KR_TASK_N; i++) {
        if (strlen(kr_task_names[i]) == len
            && memcmp(kr_task_names[i], name, len) == 0)
        {
            return i;
        }
    }

    return -1;
}


static uint32_t
kr_cls_mix(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6b;
    h ^= h >> 13;
    h *= 0xc2b2ae35;
    h ^= h >> 16;

    return h;
}


static void
kr_cls_tables(void)
{
    unsigned  c;
    uint64_t  s;

    for (c = 0; c < 256; c++) {
        kr_cls_fold[c] = (unsigned char) c;
        kr_cls_class[c] = 0;
        s = 0;

        if (c >= 0x80) {
            kr_cls_class[c] = KR_CLS_UTF8;

        } else if ((c >= 'a' && c <= 'z') || c == '_') {
            kr_cls_class[c] = KR_CLS_WORD;

        } else if (c >= 'A' && c <= 'Z') {
            kr_cls_class[c] = KR_CLS_WORD;
            kr_cls_fold[c] = (unsigned char) (c | 0x20);

        } else if (c >= '0' && c <= '9') {
            kr_cls_class[c] = KR_CLS_WORD;
            kr_cls_fold[c] = '0';
            s |= (uint64_t) 1 << KR_CLS_ST_DIGIT;

        } else if (c == '\n' || c == '\t' || c == '\r') {
            kr_cls_class[c] = KR_CLS_SPACE;
            kr_cls_fold[c] = ' ';

        } else if (c == ' ') {
            kr_cls_class[c] = KR_CLS_SPACE;
        }

        if (c == '\n' || c == '.' || c == '!' || c == '?' || c == ':') {
            kr_cls_class[c] |= KR_CLS_END;
        }

        if (c == '\n') {
            s |= (uint64_t) 1 << KR_CLS_ST_LINE;
        }

        if (c && c < 0x80 && strchr("{}[]();<>_#\\|&$", (int) c)) {
            s |= (uint64_t) 1 << KR_CLS_ST_CODE;
        }

        if (c && c < 0x80 && strchr("+-*/=^%", (int) c)) {
            s |= (uint64_t) 1 << KR_CLS_ST_MATH;
        }

        kr_cls_stat[c] = s;
    }

    kr_cls_tables_ready = 1;
}


static void
kr_cls_emit(kr_cls_feat_t *f, unsigned ns, uint32_t h)
{
    int            c;
    size_t         b;
    int8_t         w[KR_TASK_N];
    int32_t       *a;

    if (f->n == f->max) {
        return;
    }

    h = kr_cls_mix(h ^ kr_cls_seed[ns]);
    b = h >> f->shift;

    if (f->acc) {

        /*
         * a bucket's KR_TASK_N weights lie next to each other: one load,
         * and a local copy the sums cannot alias, so the additions
         * vectorise
         */

        memcpy(w, f->weights + b * KR_TASK_N, KR_TASK_N);
        a = f->acc[ns];

        for (c = 0; c < KR_TASK_N; c++) {
            a[c] += w[c];
        }

    } else {
        f->ids[f->n] = ((uint32_t) ns << 24) | (uint32_t) b;
    }

    f->n++;
    f->count[ns]++;
}


/* a word or CJK token and its pair with the token before it */

static void
kr_cls_token(kr_cls_feat_t *f, unsigned ns1, unsigned ns2, uint32_t tok,
    kr_cls_run_t *r)
{
    kr_cls_emit(f, ns1, tok);

    if (r->prev) {
        kr_cls_emit(f, ns2, r->prev * 0x9e3779b1 + tok);
    }

    if (r->first == 0) {
        r->first = tok;
    }

    r->prev = tok;
    r->n++;
}


static uint32_t
kr_cls_str_hash(const char *s)
{
    return kr_cls_fnv((const unsigned char *) s, strlen(s));
}


static size_t
kr_cls_decode(const unsigned char *p, const unsigned char *end, uint32_t *cp)
{
    size_t    n, i;
    uint32_t  c;

    c = p[0];

    if (c < 0x80) {
        *cp = c;
        return 1;
    }

    /* three bytes first: CJK text is made of them */

    if ((c & 0xf0) == 0xe0 && end - p >= 3 && (p[1] & 0xc0) == 0x80
        && (p[2] & 0xc0) == 0x80)
    {
        *cp = ((c & 0x0f) << 12) | ((uint32_t) (p[1] & 0x3f) << 6)
              | (p[2] & 0x3f);
        return 3;
    }

    if ((c & 0xe0) == 0xc0) {
        n = 2;
        c &= 0x1f;

    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        c &= 0x0f;

    } else if ((c & 0xf8) == 0xf0) {
        n = 4;
        c &= 0x07;

    } else {
        *cp = 0xfffd;
        return 1;
    }

    if ((size_t) (end - p) < n) {
        *cp = 0xfffd;
        return 1;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            *cp = 0xfffd;
            return 1;
        }

        c = (c << 6) | (p[i] & 0x3f);
    }

    *cp = c;

    return n;
}


/*
 * The class of a character: KR_CLS_WORD for letters, KR_CLS_CJK for
 * kana, CJK ideographs and Hangul (each a token of its own), 0 for
 * separators: ASCII other than letters, digits and '_', C1 controls and
 * Latin-1 punctuation, general and CJK punctuation, symbols, full-width
 * punctuation and U+FFFD.  The ranges are tested in order, the common
 * CJK ideographs first.
 */

static unsigned
kr_cls_uclass(uint32_t c)
{
    if (c < 0x80) {
        return kr_cls_class[c] & KR_CLS_WORD;
    }

    if (c >= 0x4e00 && c <= 0x9fff) {
        return KR_CLS_CJK;
    }

    if (c < 0x3000) {
        return c < 0xc0 || (c >= 0x2000 && c <= 0x2bff) ? 0 : KR_CLS_WORD;
    }

    if (c < 0x3040) {
        return 0;
    }

    if (c <= 0x30ff
        || (c >= 0x3400 && c <= 0x4dbf)
        || (c >= 0xac00 && c <= 0xd7af)
        || (c >= 0xf900 && c <= 0xfaff))
    {
        return KR_CLS_CJK;
    }

    if ((c >= 0xfe30 && c <= 0xfe4f)
        || (c >= 0xff00 && c <= 0xff0f)
        || (c >= 0xff1a && c <= 0xff20)
        || (c >= 0xff3b && c <= 0xff40)
        || (c >= 0xff5b && c <= 0xff65)
        || c == 0xfffd)
    {
        return 0;
    }

    return KR_CLS_WORD;
}


/*
 * Words (ASCII letters and digits, letters of other alphabets) and CJK
 * characters, each a token; digits are folded so that numbers of the
 * same length share a feature.  Emits unigrams to ns1 and adjacent
 * pairs to ns2.  ASCII word bytes, nearly all of the input, stay in the
 * inner loop: one table look-up and one hash step each.
 */

static void
kr_cls_words(kr_cls_feat_t *f, const unsigned char *p,
    const unsigned char *end, unsigned ns1, unsigned ns2,
    kr_cls_stats_t *st, uint32_t *first, uint32_t *last)
{
    size_t        len, wlen, math, cjks;
    uint32_t      c, h;
    uint64_t      stat;
    unsigned      cl, cjk, fence;
    kr_cls_run_t  r;

    r.prev = 0;
    r.first = 0;
    r.n = 0;
    h = 5381;
    wlen = 0;
    stat = 0;
    math = 0;
    cjks = 0;
    fence = 0;

    while (p < end) {
        c = *p;
        cl = kr_cls_class[c];

        if (cl & KR_CLS_WORD) {
            stat += kr_cls_stat[c];

            if (wlen < 48) {
                h = (h << 5) + h + kr_cls_fold[c];
            }

            wlen++;
            p++;
            continue;
        }

        if (!(cl & KR_CLS_UTF8)) {
            stat += kr_cls_stat[c];
            cjk = 0;
            p++;

            if (c == '`' && end - p >= 2 && p[0] == '`' && p[1] == '`') {
                fence = 1;
            }

        } else {
            len = kr_cls_decode(p, end, &c);
            p += len;
            cl = kr_cls_uclass(c);
            cjk = cl & KR_CLS_CJK;

            if (cjk) {
                cjks++;

            } else if (c == 0xd7 || c == 0xf7
                       || (c >= 0x2200 && c <= 0x22ff))
            {
                math++;
            }

            if (cl & KR_CLS_WORD) {
                if (wlen < 48) {
                    h = (h << 5) + h + c;
                }

                wlen++;
                continue;
            }
        }

        if (wlen) {
            kr_cls_token(f, ns1, ns2, kr_cls_mix(h), &r);
            h = 5381;
            wlen = 0;
        }

        if (cjk) {
            kr_cls_token(f, ns1, ns2, kr_cls_mix(c + 0x51ed27), &r);
        }
    }

    if (wlen) {
        kr_cls_token(f, ns1, ns2, kr_cls_mix(h), &r);
    }

    /* an earlier pass may have found the first token already */

    if (first && *first == 0) {
        *first = r.first;
    }

    if (last && r.n) {
        *last = r.prev;
    }

    if (st) {
        st->digits += KR_CLS_ST_FIELD(stat, KR_CLS_ST_DIGIT);
        st->code += KR_CLS_ST_FIELD(stat, KR_CLS_ST_CODE);
        st->math += KR_CLS_ST_FIELD(stat, KR_CLS_ST_MATH) + math;
        st->lines += KR_CLS_ST_FIELD(stat, KR_CLS_ST_LINE);
        st->cjk += cjks;
        st->fence |= fence;
    }
}


/* character trigrams, case and digits folded, white space collapsed */

static void
kr_cls_chars(kr_cls_feat_t *f, const unsigned char *p,
    const unsigned char *end)
{
    uint32_t  c, c1, c2;

    c1 = ' ';
    c2 = ' ';

    while (p < end) {
        c = *p;

        if (kr_cls_class[c] & KR_CLS_UTF8) {
            p += kr_cls_decode(p, end, &c);

        } else {
            p++;
        }

        /* an overlong sequence decodes to ASCII too */

        if (c < 0x80) {
            c = kr_cls_fold[c];
        }

        if (c == ' ' && c2 == ' ') {
            continue;
        }

        kr_cls_emit(f, KR_NS_CHAR, (c1 * 0x01000193) ^ (c2 * 0x9e3779b1)
                                   ^ (c + 0x632be5ab));
        c1 = c2;
        c2 = c;
    }

    if (c2 != ' ') {
        kr_cls_emit(f, KR_NS_CHAR, (c1 * 0x01000193) ^ (c2 * 0x9e3779b1)
                                   ^ (' ' + 0x632be5ab));
    }
}


/*
 * A sentence ends at ". ", "! ", "? ", ":\n", a new line or at CJK
 * full stops; p points just past the character c.  Callers test ASCII
 * characters against KR_CLS_END first.
 */

static int
kr_cls_sentence_end(const unsigned char *p, const unsigned char *end,
    uint32_t c)
{
    switch (c) {

    case '\n':
    case 0x3002:
    case 0xff01:
    case 0xff1f:
    case 0xff1a:
        return 1;

    case '.':
    case '!':
    case '?':
        return p == end || *p == ' ' || *p == '\n' || *p == '\t'
               || *p == '"' || *p == '\r';

    case ':':
        return p == end || *p == '\n' || *p == '\r';

    default:
        return 0;
    }
}


/* the end of the first two sentences, at most KR_CLS_INSTR_MAX bytes */

static const unsigned char *
kr_cls_head(const unsigned char *p, const unsigned char *end)
{
    uint32_t              c;
    unsigned              cl, sep, cjk, sentences, pending, seen;
    const unsigned char  *start, *stop, *q;

    start = p;
    stop = (size_t) (end - p) > KR_CLS_INSTR_MAX ? p + KR_CLS_INSTR_MAX : end;
    sentences = 0;
    pending = 0;
    seen = 0;

    while (p < stop) {
        q = p;
        c = *p;
        cl = kr_cls_class[c];

        if (cl & KR_CLS_UTF8) {
            p += kr_cls_decode(p, end, &c);
            cl = kr_cls_uclass(c);
            sep = !(cl & (KR_CLS_WORD | KR_CLS_CJK));
            cjk = cl & KR_CLS_CJK;
            cl = KR_CLS_END;

        } else {
            p++;
            sep = !(cl & KR_CLS_WORD);
            cjk = 0;
        }

        if (pending && !sep) {
            if (++sentences == 2) {
                return q;
            }

            pending = 0;
        }

        if (!sep || cjk) {
            seen = 1;
        }

        if (seen && (cl & KR_CLS_END) && kr_cls_sentence_end(p, end, c)) {
            pending = 1;
        }
    }

    return kr_cls_boundary(p, start, end);
}


/* the start of the last two sentences, at most KR_CLS_INSTR_MAX bytes */

static const unsigned char *
kr_cls_tail(const unsigned char *p, const unsigned char *end)
{
    uint32_t              c;
    unsigned              cl, sep, pending;
    const unsigned char  *s1, *s2, *q;

    while (end > p && (kr_cls_class[end[-1]] & KR_CLS_SPACE)) {
        end--;
    }

    if ((size_t) (end - p) > KR_CLS_INSTR_MAX) {
        p = kr_cls_boundary(end - KR_CLS_INSTR_MAX, p, end);
    }

    s1 = p;
    s2 = p;
    pending = 0;

    while (p < end) {
        q = p;
        c = *p;
        cl = kr_cls_class[c];

        if (cl & KR_CLS_UTF8) {
            p += kr_cls_decode(p, end, &c);
            sep = !(kr_cls_uclass(c) & (KR_CLS_WORD | KR_CLS_CJK));
            cl = KR_CLS_END;

        } else {
            p++;
            sep = !(cl & KR_CLS_WORD);
        }

        if (pending && !sep) {
            s1 = s2;
            s2 = q;
            pending = 0;
        }

        if ((cl & KR_CLS_END) && kr_cls_sentence_end(p, end, c)) {
            pending = 1;
        }
    }

    return s1;
}


/* moves p forward to the start of a UTF-8 character */

static const unsigned char *
kr_cls_boundary(const unsigned char *p, const unsigned char *start,
    const unsigned char *end)
{
    unsigned  n;

    (void) start;

    for (n = 0; p < end && n < 3 && (*p & 0xc0) == 0x80; n++) {
        p++;
    }

    return p;
}


static unsigned
kr_cls_log2(size_t v)
{
    unsigned  n;

    for (n = 0; v > 1; n++) {
        v >>= 1;
    }

    return n;
}


static void
kr_cls_struct(kr_cls_feat_t *f, const char *name, unsigned v)
{
    kr_cls_emit(f, KR_NS_STRUCT, kr_cls_str_hash(name) + v * 0x9e3779b1);
}


/* the features of a request into f, set up by the caller */

static size_t
kr_cls_extract(kr_cls_feat_t *f, const kr_classify_input_t *in,
    float value[KR_CLASSIFY_NS_N])
{
    size_t                 len, frac;
    uint32_t               cue_first, cue_tail, cue_last;
    unsigned               i, m;
    kr_cls_stats_t         st;
    const unsigned char   *u, *a_end, *b, *b_end, *head_end, *tail, *s, *t;
    const unsigned char   *e;

    if (!kr_cls_tables_ready) {
        kr_cls_tables();
    }

    memset(&st, 0, sizeof(st));

    /* clip the user message to its head and tail */

    u = in->user ? in->user : (const unsigned char *) "";
    len = in->user ? in->user_len : 0;

    if (len > KR_CLASSIFY_HEAD_MAX + KR_CLASSIFY_TAIL_MAX + 1) {
        a_end = kr_cls_boundary(u + KR_CLASSIFY_HEAD_MAX, u, u + len);
        b = kr_cls_boundary(u + len - KR_CLASSIFY_TAIL_MAX, u, u + len);
        b_end = u + len;

    } else {
        a_end = u + len;
        b = a_end;
        b_end = a_end;
    }

    /* body */

    if (b == b_end && (size_t) (a_end - u) <= 2 * KR_CLS_BODY_MAX) {
        kr_cls_words(f, u, a_end, KR_NS_BODY, KR_NS_BODY2, &st, NULL, NULL);

    } else {
        s = (size_t) (a_end - u) > KR_CLS_BODY_MAX
            ? kr_cls_boundary(u + KR_CLS_BODY_MAX, u, a_end) : a_end;
        kr_cls_words(f, u, s, KR_NS_BODY, KR_NS_BODY2, &st, NULL, NULL);

        t = b < b_end ? b : s;
        e = b < b_end ? b_end : a_end;

        if ((size_t) (e - t) > KR_CLS_BODY_MAX) {
            t = kr_cls_boundary(e - KR_CLS_BODY_MAX, t, e);
        }

        kr_cls_words(f, t, e, KR_NS_BODY, KR_NS_BODY2, &st, NULL, NULL);
    }

    /* instruction: first and last sentences */

    head_end = kr_cls_head(u, a_end);

    cue_first = 0;
    cue_tail = 0;
    cue_last = 0;

    kr_cls_words(f, u, head_end, KR_NS_HEAD, KR_NS_HEAD2, NULL,
                 &cue_first, NULL);
    kr_cls_chars(f, u, head_end);

    if (b < b_end) {
        tail = kr_cls_tail(b, b_end);
        s = b_end;

    } else {
        tail = kr_cls_tail(u, a_end);
        s = a_end;
    }

    kr_cls_words(f, tail, s, KR_NS_TAIL, KR_NS_TAIL2, NULL,
                 &cue_tail, &cue_last);
    kr_cls_chars(f, tail, s);

    if (cue_first) {
        kr_cls_emit(f, KR_NS_CUE, cue_first ^ 0x1f);
    }

    if (cue_tail) {
        kr_cls_emit(f, KR_NS_CUE, cue_tail ^ 0x2f);
    }

    if (cue_last) {
        kr_cls_emit(f, KR_NS_CUE, cue_last ^ 0x3f);
    }

    /* system prompt */

    if (in->system && in->system_len) {
        len = in->system_len;

        if (len > KR_CLASSIFY_SYSTEM_MAX) {
            len = KR_CLASSIFY_SYSTEM_MAX;
        }

        kr_cls_words(f, in->system, in->system + len, KR_NS_SYS, KR_NS_SYS,
                     NULL, NULL, NULL);
        kr_cls_struct(f, "system", 1);
    }

    /* structure */

    m = in->messages;
    kr_cls_struct(f, "messages", m <= 1 ? 0 : m == 2 ? 1 : m <= 4 ? 2
                                  : m <= 8 ? 3 : 4);

    if (in->has_tools) {
        kr_cls_struct(f, "tools", 1);
    }

    if (in->json_format) {
        kr_cls_struct(f, "json", 1);
    }

    kr_cls_struct(f, "length", kr_cls_log2(in->user_len) / 2);
    kr_cls_struct(f, "context", kr_cls_log2(in->context_tokens) / 2);
    kr_cls_struct(f, "lines", kr_cls_log2(st.lines + 1));

    if (st.fence) {
        kr_cls_struct(f, "fence", 1);
    }

    /*
     * TODO: st.bytes is never set, so the code, digit and CJK share
     * buckets are not emitted; setting it changes the features and
     * needs new weights
     */

    if (st.bytes) {
        frac = st.code * 1000 / st.bytes;
        kr_cls_struct(f, "code", frac < 10 ? 0 : frac < 30 ? 1
                                  : frac < 60 ? 2 : frac < 100 ? 3 : 4);

        frac = st.digits * 1000 / st.bytes;
        kr_cls_struct(f, "digits", frac == 0 ? 0 : frac < 10 ? 1
                                    : frac < 30 ? 2 : frac < 80 ? 3 : 4);

        frac = st.cjk * 3000 / st.bytes;
        kr_cls_struct(f, "cjk", frac == 0 ? 0 : frac < 300 ? 1 : 2);
    }

    kr_cls_struct(f, "math", st.math == 0 ? 0 : st.math < 3 ? 1
                              : st.math < 6 ? 2 : 3);

    s = b < b_end ? b_end : a_end;

    while (s > u && (s[-1] == ' ' || s[-1] == '\n' || s[-1] == '\r')) {
        s--;
    }

    if (s > u && (s[-1] == '?'
                  || (s - u >= 3 && s[-3] == 0xef && s[-2] == 0xbc
                      && s[-1] == 0x9f)))
    {
        kr_cls_struct(f, "question", 1);
    }

    for (i = 0; i < KR_CLASSIFY_NS_N; i++) {
        value[i] = f->count[i]
                   ? kr_cls_ns_weight[i] / sqrtf((float) f->count[i])
                   : 0.0f;
    }

    value[KR_NS_CUE] = kr_cls_ns_weight[KR_NS_CUE];
    value[KR_NS_STRUCT] = kr_cls_ns_weight[KR_NS_STRUCT];

    return f->n;
}


size_t
kr_classify_features(const kr_classify_input_t *in, unsigned bits,
    uint32_t *ids, size_t max, float value[KR_CLASSIFY_NS_N])
{
    kr_cls_feat_t  f;

    memset(&f, 0, sizeof(f));

    f.ids = ids;
    f.max = max;
    f.shift = 32 - bits;

    return kr_cls_extract(&f, in, value);
}


int
kr_classify(const kr_classifier_t *cls, const kr_classify_input_t *in,
    kr_classify_result_t *res)
{
    int            c, best;
    size_t         i;
    float          v, sum, max;
    int32_t        acc[KR_CLASSIFY_NS_N][KR_TASK_N];
    kr_cls_feat_t  f;
    float          value[KR_CLASSIFY_NS_N];

    if (cls == NULL || in == NULL || res == NULL) {
        return -1;
    }

    memset(&f, 0, sizeof(f));
    memset(acc, 0, sizeof(acc));

    f.acc = acc;
    f.weights = cls->img.weights;
    f.max = KR_CLASSIFY_FEATURES_MAX;
    f.shift = 32 - cls->img.bits;

    (void) kr_cls_extract(&f, in, value);

    best = 0;

    for (c = 0; c < KR_TASK_N; c++) {
        v = 0.0f;

        for (i = 0; i < KR_CLASSIFY_NS_N; i++) {
            v += value[i] * (float) acc[i][c];
        }

        res->scores[c] = cls->img.bias[c] + cls->img.scale * v;

        if (res->scores[c] > res->scores[best]) {
            best = c;
        }
    }

    max = res->scores[best];
    sum = 0.0f;

    for (c = 0; c < KR_TASK_N; c++) {
        sum += expf(res->scores[c] - max);
    }

    res->task = best;
    res->prob = 1.0f / sum;

    return best;
}


/* weights image */

size_t
kr_classifier_image_size(unsigned bits)
{
    return KR_CLS_HDR_SIZE + ((size_t) KR_TASK_N << bits) + 4;
}


size_t
kr_classifier_image_write(const kr_classifier_image_t *img,
    unsigned char *buf, size_t size)
{
    int       c;
    size_t    total;
    uint32_t  u;

    total = kr_classifier_image_size(img->bits);

    if (size < total) {
        return 0;
    }

    memcpy(buf, KR_CLASSIFY_MAGIC, 4);
    kr_cls_put32(buf + 4, KR_CLASSIFY_FORMAT);
    kr_cls_put32(buf + 8, KR_CLASSIFY_FEATURES_VERSION);
    kr_cls_put32(buf + 12, KR_TASK_N);
    kr_cls_put32(buf + 16, img->bits);

    memcpy(&u, &img->scale, 4);
    kr_cls_put32(buf + 20, u);

    for (c = 0; c < KR_TASK_N; c++) {
        memcpy(&u, &img->bias[c], 4);
        kr_cls_put32(buf + 24 + 4 * c, u);
    }

    memcpy(buf + KR_CLS_HDR_SIZE, img->weights,
           (size_t) KR_TASK_N << img->bits);

    kr_cls_put32(buf + total - 4, kr_cls_fnv(buf, total - 4));

    return total;
}


int
kr_classifier_image_parse(kr_classifier_image_t *img,
    const unsigned char *buf, size_t size, char *err, size_t errlen)
{
    int       c;
    size_t    total;
    uint32_t  u, v;

    if (size < KR_CLS_HDR_SIZE + 4) {
        snprintf(err, errlen, "truncated weights: %zu bytes", size);
        return -1;
    }

    if (memcmp(buf, KR_CLASSIFY_MAGIC, 4) != 0) {
        snprintf(err, errlen, "not a kroute classifier weights file "
                 "(bad magic)");
        return -1;
    }

    u = kr_cls_get32(buf + 4);
    if (u != KR_CLASSIFY_FORMAT) {
        snprintf(err, errlen, "unsupported weights format version %u "
                 "(expected %u)", (unsigned) u, KR_CLASSIFY_FORMAT);
        return -1;
    }

    u = kr_cls_get32(buf + 8);
    if (u != KR_CLASSIFY_FEATURES_VERSION) {
        snprintf(err, errlen, "weights trained for feature version %u, "
                 "this build extracts version %u", (unsigned) u,
                 KR_CLASSIFY_FEATURES_VERSION);
        return -1;
    }

    u = kr_cls_get32(buf + 12);
    if (u != KR_TASK_N) {
        snprintf(err, errlen, "weights have %u task types, expected %u",
                 (unsigned) u, KR_TASK_N);
        return -1;
    }

    u = kr_cls_get32(buf + 16);
    if (u < KR_CLASSIFY_BITS_MIN || u > KR_CLASSIFY_BITS_MAX) {
        snprintf(err, errlen, "bad hash table size 2^%u", (unsigned) u);
        return -1;
    }

    total = kr_classifier_image_size(u);

    if (size != total) {
        snprintf(err, errlen, "%s weights: %zu bytes, expected %zu",
                 size < total ? "truncated" : "oversized", size, total);
        return -1;
    }

    v = kr_cls_get32(buf + total - 4);
    if (v != kr_cls_fnv(buf, total - 4)) {
        snprintf(err, errlen, "weights checksum mismatch");
        return -1;
    }

    img->bits = u;

    u = kr_cls_get32(buf + 20);
    memcpy(&img->scale, &u, 4);

    for (c = 0; c < KR_TASK_N; c++) {
        u = kr_cls_get32(buf + 24 + 4 * c);
        memcpy(&img->bias[c], &u, 4);
    }

    if (!isfinite(img->scale)) {
        snprintf(err, errlen, "bad weights scale");
        return -1;
    }

    img->weights = (const int8_t *) (buf + KR_CLS_HDR_SIZE);

    return 0;
}


kr_classifier_t *
kr_classifier_from_memory(const unsigned char *buf, size_t size, char *err,
    size_t errlen)
{
    kr_classifier_t  *cls;

    if (!kr_cls_tables_ready) {
        kr_cls_tables();
    }

    cls = calloc(1, sizeof(kr_classifier_t));
    if (cls == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    if (kr_classifier_image_parse(&cls->img, buf, size, err, errlen) != 0) {
        free(cls);
        return NULL;
    }

    return cls;
}


kr_classifier_t *
kr_classifier_load(const char *path, char *err, size_t errlen)
{
    long              size;
    FILE             *fp;
    unsigned char    *buf;
    kr_classifier_t  *cls;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(err, errlen, "cannot open \"%s\": %s", path,
                 strerror(errno));
        return NULL;
    }

    if (fseek(fp, 0, SEEK_END) != 0 || (size = ftell(fp)) < 0
        || fseek(fp, 0, SEEK_SET) != 0)
    {
        snprintf(err, errlen, "cannot read \"%s\": %s", path,
                 strerror(errno));
        fclose(fp);
        return NULL;
    }

    if ((size_t) size > kr_classifier_image_size(KR_CLASSIFY_BITS_MAX)) {
        snprintf(err, errlen, "\"%s\": too large for a weights file", path);
        fclose(fp);
        return NULL;
    }

    buf = malloc(size ? (size_t) size : 1);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        fclose(fp);
        return NULL;
    }

    if (fread(buf, 1, (size_t) size, fp) != (size_t) size) {
        snprintf(err, errlen, "cannot read \"%s\"", path);
        free(buf);
        fclose(fp);
        return NULL;
    }

    fclose(fp);

    cls = kr_classifier_from_memory(buf, (size_t) size, err, errlen);
    if (cls == NULL) {
        free(buf);
        return NULL;
    }

    cls->owned = buf;

    return cls;
}


void
kr_classifier_free(kr_classifier_t *cls)
{
    if (cls == NULL || cls == &kr_cls_default) {
        return;
    }

    free(cls->owned);
    free(cls);
}


const kr_classifier_t *
kr_classifier_default(void)
{
    char  err[128];

    if (kr_cls_default_state == 0) {
        kr_cls_default_state = -1;

        if (!kr_cls_tables_ready) {
            kr_cls_tables();
        }

        if (kr_classifier_image_parse(&kr_cls_default.img,
                                      kr_classify_default_image,
                                      kr_classify_default_image_size,
                                      err, sizeof(err))
            == 0)
        {
            kr_cls_default_state = 1;
        }
    }

    return kr_cls_default_state == 1 ? &kr_cls_default : NULL;
}


static uint32_t
kr_cls_get32(const unsigned char *p)
{
    return (uint32_t) p[0] | ((uint32_t) p[1] << 8)
           | ((uint32_t) p[2] << 16) | ((uint32_t) p[3] << 24);
}


static void
kr_cls_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char) v;
    p[1] = (unsigned char) (v >> 8);
    p[2] = (unsigned char) (v >> 16);
    p[3] = (unsigned char) (v >> 24);
}


static uint32_t
kr_cls_fnv(const unsigned char *p, size_t len)
{
    size_t    i;
    uint32_t  h;

    h = KR_CLS_FNV_BASIS;

    for (i = 0; i < len; i++) {
        h = (h ^ p[i]) * KR_CLS_FNV_PRIME;
    }

    return h;
}
