
/*
 * Copyright (C) kroute authors
 */


/*
 * JSON scanning for kroute: strict validation, skipping of values,
 * member iteration and string decoding over caller memory.  Recursion
 * is bounded by KR_JSON_MAX_DEPTH and every read is checked against the
 * end of the buffer, whatever the input.
 */


#include <string.h>

#include "kr_json.h"


/* byte classes: whitespace, ends a run of plain string bytes, ends a
 * number or a literal */
#define KR_JSON_WS    0x01
#define KR_JSON_STR   0x02
#define KR_JSON_END   0x04

#define KR_JSON_ONES  0x0101010101010101ULL
#define KR_JSON_HIGH  0x8080808080808080ULL


typedef struct {
    const unsigned char  *end;
    const unsigned char  *err;
} kr_json_scan_t;


static inline const unsigned char *kr_json_ws(const unsigned char *p,
    const unsigned char *end);
static inline uint64_t kr_json_ctl8(const unsigned char *p);
static inline const unsigned char *kr_json_ctl(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *kr_json_scan_value(kr_json_scan_t *sc,
    const unsigned char *p, int depth);
static const unsigned char *kr_json_scan_string(kr_json_scan_t *sc,
    const unsigned char *p);
static const unsigned char *kr_json_scan_number(kr_json_scan_t *sc,
    const unsigned char *p);
static inline const unsigned char *kr_json_skip_string_valid(
    const unsigned char *p, const unsigned char *end);
static const unsigned char *kr_json_skip_valid(const unsigned char *p,
    const unsigned char *end);
static int kr_json_hex4(const unsigned char *p, const unsigned char *end,
    unsigned *out);
static size_t kr_json_utf8(unsigned cp, unsigned char *out);
static int kr_json_literal(const kr_str_t *v, const char *lit, size_t n);


static const unsigned char  kr_json_cls[256] = {
    2, 2, 2, 2, 2, 2, 2, 2, 2, 7, 7, 2, 2, 7, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
};


static inline const unsigned char *
kr_json_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (kr_json_cls[*p] & KR_JSON_WS)) {
        p++;
    }

    return p;
}


/*
 * Non-zero if one of the eight bytes at p is a control byte: the usual
 * has-byte-less-than trick, exact as a yes/no answer.
 */

static inline uint64_t
kr_json_ctl8(const unsigned char *p)
{
    uint64_t  w;

    memcpy(&w, p, 8);

    return (w - KR_JSON_ONES * 0x20) & ~w & KR_JSON_HIGH;
}


/* the first control byte in [p, end), or end */

static inline const unsigned char *
kr_json_ctl(const unsigned char *p, const unsigned char *end)
{
    while (end - p >= 32
           && (kr_json_ctl8(p) | kr_json_ctl8(p + 8) | kr_json_ctl8(p + 16)
               | kr_json_ctl8(p + 24)) == 0)
    {
        p += 32;
    }

    while (p < end && *p >= 0x20) {
        p++;
    }

    return p;
}


static int
kr_json_hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    unsigned  i, c, v;

    if (end - p < 4) {
        return -1;
    }

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            c -= '0';

        } else if (c >= 'a' && c <= 'f') {
            c = c - 'a' + 10;

        } else if (c >= 'A' && c <= 'F') {
            c = c - 'A' + 10;

        } else {
            return -1;
        }

        v = (v << 4) | c;
    }

    *out = v;

    return 0;
}


static const unsigned char *
kr_json_scan_string(kr_json_scan_t *sc, const unsigned char *p)
{
    unsigned              cp, lo;
    const unsigned char  *end, *q, *b;

    end = sc->end;

    /* p is at the opening quote */
    p++;
    q = p - 1;

    for ( ;; ) {

        /*
         * memchr() finds the first quote at or after p and the first
         * backslash before it; only the control-byte test looks at
         * every byte, a word at a time
         */

        if (q < p) {
            q = memchr(p, '"', (size_t) (end - p));
            if (q == NULL) {
                q = end;
            }
        }

        b = memchr(p, '\\', (size_t) (q - p));
        if (b == NULL) {
            b = q;
        }

        p = kr_json_ctl(p, b);

        if (p < b || p == end) {
            /* a control byte, or no closing quote */
            break;
        }

        if (*p == '"') {
            return p + 1;
        }

        /* a backslash */

        if (end - p < 2) {
            sc->err = p;
            return NULL;
        }

        switch (p[1]) {

        case '"': case '\\': case '/': case 'b':
        case 'f': case 'n': case 'r': case 't':
            p += 2;
            continue;

        case 'u':
            if (kr_json_hex4(p + 2, end, &cp) != 0) {
                sc->err = p;
                return NULL;
            }

            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                /* lone low surrogate */
                sc->err = p;
                return NULL;
            }

            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u'
                    || kr_json_hex4(p + 8, end, &lo) != 0
                    || lo < 0xDC00 || lo > 0xDFFF)
                {
                    sc->err = p;
                    return NULL;
                }

                p += 12;
                continue;
            }

            p += 6;
            continue;

        default:
            sc->err = p;
            return NULL;
        }
    }

    sc->err = p;

    return NULL;
}


static const unsigned char *
kr_json_scan_number(kr_json_scan_t *sc, const unsigned char *p)
{
    const unsigned char  *end, *s;

    end = sc->end;

    if (p < end && *p == '-') {
        p++;
    }

    if (p >= end) {
        sc->err = p;
        return NULL;
    }

    if (*p == '0') {
        p++;

    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

    } else {
        sc->err = p;
        return NULL;
    }

    if (p < end && *p == '.') {
        s = ++p;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == s) {
            sc->err = p;
            return NULL;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        s = p;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == s) {
            sc->err = p;
            return NULL;
        }
    }

    return p;
}


static const unsigned char *
kr_json_scan_value(kr_json_scan_t *sc, const unsigned char *p, int depth)
{
    size_t                n;
    const char           *lit;
    const unsigned char  *end;

    end = sc->end;

    p = kr_json_ws(p, end);

    if (p >= end) {
        sc->err = p;
        return NULL;
    }

    switch (*p) {

    case '"':
        return kr_json_scan_string(sc, p);

    case '{':
    case '[':
        if (depth >= KR_JSON_MAX_DEPTH) {
            sc->err = p;
            return NULL;
        }

        if (*p == '{') {
            p = kr_json_ws(p + 1, end);

            if (p < end && *p == '}') {
                return p + 1;
            }

            for ( ;; ) {
                if (p >= end || *p != '"') {
                    sc->err = p;
                    return NULL;
                }

                p = kr_json_scan_string(sc, p);
                if (p == NULL) {
                    return NULL;
                }

                p = kr_json_ws(p, end);

                if (p >= end || *p != ':') {
                    sc->err = p;
                    return NULL;
                }

                p = kr_json_scan_value(sc, p + 1, depth + 1);
                if (p == NULL) {
                    return NULL;
                }

                p = kr_json_ws(p, end);

                if (p < end && *p == '}') {
                    return p + 1;
                }

                if (p >= end || *p != ',') {
                    sc->err = p;
                    return NULL;
                }

                p = kr_json_ws(p + 1, end);
            }
        }

        p = kr_json_ws(p + 1, end);

        if (p < end && *p == ']') {
            return p + 1;
        }

        for ( ;; ) {
            p = kr_json_scan_value(sc, p, depth + 1);
            if (p == NULL) {
                return NULL;
            }

            p = kr_json_ws(p, end);

            if (p < end && *p == ']') {
                return p + 1;
            }

            if (p >= end || *p != ',') {
                sc->err = p;
                return NULL;
            }

            p++;
        }

    case 't':
        lit = "true";
        n = 4;
        break;

    case 'f':
        lit = "false";
        n = 5;
        break;

    case 'n':
        lit = "null";
        n = 4;
        break;

    default:
        return kr_json_scan_number(sc, p);
    }

    if ((size_t) (end - p) < n || memcmp(p, lit, n) != 0) {
        sc->err = p;
        return NULL;
    }

    return p + n;
}


/*
 * Skipping inside a buffer that has been validated: a string ends at the
 * first quote not escaped by an odd run of backslashes, a container at
 * the bracket that brings the depth back to zero.  Every read is still
 * checked against end, so that other input costs nothing worse than
 * meaningless spans.
 */

static inline const unsigned char *
kr_json_skip_string_valid(const unsigned char *p, const unsigned char *end)
{
    const unsigned char  *s, *q, *b;

    s = p + 1;
    q = s;

    while (q < end) {
        q = memchr(q, '"', (size_t) (end - q));
        if (q == NULL) {
            break;
        }

        for (b = q; b > s && b[-1] == '\\'; b--) { /* void */ }

        if (((q - b) & 1) == 0) {
            return q + 1;
        }

        q++;
    }

    return end;
}


static const unsigned char *
kr_json_skip_valid(const unsigned char *p, const unsigned char *end)
{
    size_t  depth;

    if (p >= end) {
        return end;
    }

    if (*p == '"') {
        return kr_json_skip_string_valid(p, end);
    }

    if (*p != '{' && *p != '[') {
        while (p < end && !(kr_json_cls[*p] & KR_JSON_END)) {
            p++;
        }

        return p;
    }

    depth = 0;

    while (p < end) {

        /* pretty-printed bodies indent with runs of spaces */

        while (end - p >= 8 && memcmp(p, "        ", 8) == 0) {
            p += 8;
        }

        if (p == end) {
            break;
        }

        switch (*p) {

        case '"':
            p = kr_json_skip_string_valid(p, end);
            continue;

        case '{':
        case '[':
            depth++;
            break;

        case '}':
        case ']':
            if (--depth == 0) {
                return p + 1;
            }

            break;
        }

        p++;
    }

    return end;
}


int
kr_json_validate(const unsigned char *p, size_t len, size_t *err_off)
{
    kr_json_scan_t        sc;
    const unsigned char  *q;

    sc.end = p + len;
    sc.err = p;

    q = kr_json_scan_value(&sc, p, 0);

    if (q != NULL) {
        q = kr_json_ws(q, sc.end);

        if (q == sc.end) {
            return 0;
        }

        sc.err = q;
    }

    if (err_off) {
        *err_off = (size_t) (sc.err - p);
    }

    return -1;
}


const unsigned char *
kr_json_skip(const unsigned char *p, const unsigned char *end)
{
    kr_json_scan_t  sc;

    if (p == NULL || end == NULL || p > end) {
        return NULL;
    }

    sc.end = end;
    sc.err = p;

    return kr_json_scan_value(&sc, p, 0);
}


int
kr_json_value(const unsigned char *p, size_t len, kr_str_t *out)
{
    const unsigned char  *s, *e, *end;

    end = p + len;
    s = kr_json_ws(p, end);
    e = kr_json_skip(s, end);

    if (e == NULL || kr_json_ws(e, end) != end) {
        return -1;
    }

    out->data = s;
    out->len = (size_t) (e - s);

    return 0;
}


int
kr_json_iter_init(kr_json_iter_t *it, const kr_str_t *container)
{
    const unsigned char  *p, *end;

    if (container == NULL || container->data == NULL) {
        return -1;
    }

    end = container->data + container->len;
    p = kr_json_ws(container->data, end);

    if (p >= end || (*p != '{' && *p != '[')) {
        return -1;
    }

    it->type = *p;
    it->p = p + 1;
    it->end = end;
    it->state = 0;
    it->valid = 0;

    return 0;
}


int
kr_json_iter_init_valid(kr_json_iter_t *it, const kr_str_t *container)
{
    if (kr_json_iter_init(it, container) != 0) {
        return -1;
    }

    it->valid = 1;

    return 0;
}


/*
 * Moves an iterator past the separator to its next member: 1 with *pp at
 * it, 0 when the container closes, -1 on malformed input.
 */

static int
kr_json_iter_step(kr_json_iter_t *it, unsigned char close,
    const unsigned char **pp)
{
    const unsigned char  *p, *end;

    if (it->type != (close == '}' ? '{' : '[')) {
        return -1;
    }

    if (it->state == 2) {
        return 0;
    }

    end = it->end;
    p = kr_json_ws(it->p, end);

    if (p >= end) {
        return -1;
    }

    if (*p == close) {
        it->p = p + 1;
        it->state = 2;
        return 0;
    }

    if (it->state == 1) {
        if (*p != ',') {
            return -1;
        }

        p = kr_json_ws(p + 1, end);
    }

    *pp = p;

    return 1;
}


int
kr_json_object_next(kr_json_iter_t *it, kr_str_t *key, kr_str_t *value)
{
    int                   rc;
    kr_json_scan_t        sc;
    const unsigned char  *p, *k, *end;

    rc = kr_json_iter_step(it, '}', &p);
    if (rc != 1) {
        return rc;
    }

    end = it->end;

    if (p >= end || *p != '"') {
        return -1;
    }

    sc.end = end;
    sc.err = p;

    k = p;
    p = it->valid ? kr_json_skip_string_valid(p, end)
                  : kr_json_scan_string(&sc, p);
    if (p == NULL || p - k < 2) {
        return -1;
    }

    key->data = k + 1;
    key->len = (size_t) (p - k - 2);

    p = kr_json_ws(p, end);

    if (p >= end || *p != ':') {
        return -1;
    }

    p = kr_json_ws(p + 1, end);
    k = p;

    p = it->valid ? kr_json_skip_valid(p, end) : kr_json_scan_value(&sc, p, 1);
    if (p == NULL || p == k) {
        return -1;
    }

    value->data = k;
    value->len = (size_t) (p - k);

    it->p = p;
    it->state = 1;

    return 1;
}


int
kr_json_array_next(kr_json_iter_t *it, kr_str_t *value)
{
    int                   rc;
    kr_json_scan_t        sc;
    const unsigned char  *p, *v, *end;

    rc = kr_json_iter_step(it, ']', &p);
    if (rc != 1) {
        return rc;
    }

    end = it->end;

    sc.end = end;
    sc.err = p;

    v = p;
    p = it->valid ? kr_json_skip_valid(p, end) : kr_json_scan_value(&sc, p, 1);
    if (p == NULL || p == v) {
        return -1;
    }

    value->data = v;
    value->len = (size_t) (p - v);

    it->p = p;
    it->state = 1;

    return 1;
}


static size_t
kr_json_utf8(unsigned cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char) cp;
        return 1;
    }

    if (cp < 0x800) {
        out[0] = (unsigned char) (0xC0 | (cp >> 6));
        out[1] = (unsigned char) (0x80 | (cp & 0x3F));
        return 2;
    }

    if (cp < 0x10000) {
        out[0] = (unsigned char) (0xE0 | (cp >> 12));
        out[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char) (0x80 | (cp & 0x3F));
        return 3;
    }

    out[0] = (unsigned char) (0xF0 | (cp >> 18));
    out[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char) (0x80 | (cp & 0x3F));

    return 4;
}


size_t
kr_json_char_next(const unsigned char **pp, const unsigned char *end,
    unsigned char *out)
{
    size_t                n, i;
    unsigned              cp, lo;
    const unsigned char  *p;

    p = *pp;

    if (p >= end) {
        return 0;
    }

    if (*p < 0x80 && *p != '\\') {
        out[0] = *p;
        *pp = p + 1;
        return 1;
    }

    if (*p != '\\') {

        /* copy a whole UTF-8 sequence so that truncation never splits it */

        if (*p < 0xC0) {
            n = 1;

        } else if (*p < 0xE0) {
            n = 2;

        } else if (*p < 0xF0) {
            n = 3;

        } else {
            n = 4;
        }

        if ((size_t) (end - p) < n) {
            n = 1;
        }

        for (i = 1; i < n; i++) {
            if ((p[i] & 0xC0) != 0x80) {
                n = 1;
                break;
            }
        }

        memcpy(out, p, n);
        *pp = p + n;

        return n;
    }

    if (end - p < 2) {
        *pp = end;
        return kr_json_utf8(0xFFFD, out);
    }

    switch (p[1]) {
    case 'b':
        out[0] = '\b';
        break;
    case 'f':
        out[0] = '\f';
        break;
    case 'n':
        out[0] = '\n';
        break;
    case 'r':
        out[0] = '\r';
        break;
    case 't':
        out[0] = '\t';
        break;
    case 'u':
        if (kr_json_hex4(p + 2, end, &cp) != 0) {
            *pp = p + 2;
            return kr_json_utf8(0xFFFD, out);
        }

        p += 6;

        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - p >= 6 && p[0] == '\\' && p[1] == 'u'
                && kr_json_hex4(p + 2, end, &lo) == 0
                && lo >= 0xDC00 && lo <= 0xDFFF)
            {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;

            } else {
                cp = 0xFFFD;
            }

        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            cp = 0xFFFD;
        }

        *pp = p;

        return kr_json_utf8(cp, out);

    default:
        /* '"', '\\', '/' and anything unknown stand for themselves */
        out[0] = p[1];
        break;
    }

    *pp = p + 2;

    return 1;
}


static void
kr_json_unquote(const kr_str_t *raw, const unsigned char **p,
    const unsigned char **end)
{
    *p = raw->data;
    *end = raw->data + raw->len;

    if (raw->len >= 2 && raw->data[0] == '"') {
        (*p)++;
        (*end)--;
    }
}


size_t
kr_json_string_decode(const kr_str_t *raw, unsigned char *dst, size_t size)
{
    size_t                n, w;
    unsigned char         ch[4];
    const unsigned char  *p, *end, *q;

    kr_json_unquote(raw, &p, &end);

    w = 0;

    while (p < end) {

        /* bytes up to the next backslash come out unchanged */

        q = memchr(p, '\\', (size_t) (end - p));
        n = (q ? q : end) - p;

        if (size - w < n) {
            break;
        }

        if (n) {
            memcpy(dst + w, p, n);
            w += n;
            p += n;
        }

        n = kr_json_char_next(&p, end, ch);

        if (n == 0 || size - w < n) {
            return w;
        }

        memcpy(dst + w, ch, n);
        w += n;
    }

    /* the run that does not fit: as many whole characters as do */

    for ( ;; ) {
        n = kr_json_char_next(&p, end, ch);

        if (n == 0 || size - w < n) {
            break;
        }

        memcpy(dst + w, ch, n);
        w += n;
    }

    return w;
}


size_t
kr_json_string_decoded_len(const kr_str_t *raw)
{
    size_t                w;
    unsigned char         ch[4];
    const unsigned char  *p, *end, *q;

    kr_json_unquote(raw, &p, &end);

    w = 0;

    while (p < end) {
        q = memchr(p, '\\', (size_t) (end - p));

        if (q == NULL) {
            w += (size_t) (end - p);
            break;
        }

        w += (size_t) (q - p);
        p = q;

        /* every escape but the hex ones stands for one byte */

        if (end - p >= 2 && p[1] != 'u') {
            w++;
            p += 2;
            continue;
        }

        w += kr_json_char_next(&p, end, ch);
    }

    return w;
}


int
kr_json_key_eqn(const kr_str_t *key, const char *s, size_t n)
{
    size_t                k;
    unsigned char         ch[4];
    const unsigned char  *p, *end;

    if (memchr(key->data, '\\', key->len) == NULL) {
        return key->len == n && memcmp(key->data, s, n) == 0;
    }

    p = key->data;
    end = p + key->len;

    while (p < end) {
        k = kr_json_char_next(&p, end, ch);

        if (k > n || memcmp(ch, s, k) != 0) {
            return 0;
        }

        s += k;
        n -= k;
    }

    return n == 0;
}


int
kr_json_key_eq(const kr_str_t *key, const char *s)
{
    return kr_json_key_eqn(key, s, strlen(s));
}


static int
kr_json_literal(const kr_str_t *v, const char *lit, size_t n)
{
    return v != NULL && v->data != NULL && v->len == n
           && memcmp(v->data, lit, n) == 0;
}


int
kr_json_is_null(const kr_str_t *v)
{
    return kr_json_literal(v, "null", 4);
}


int
kr_json_is_true(const kr_str_t *v)
{
    return kr_json_literal(v, "true", 4);
}


int
kr_json_is_false(const kr_str_t *v)
{
    return kr_json_literal(v, "false", 5);
}


int
kr_json_is_string(const kr_str_t *v)
{
    return v != NULL && v->data != NULL && v->len >= 2
           && v->data[0] == '"' && v->data[v->len - 1] == '"';
}


int
kr_json_is_object(const kr_str_t *v)
{
    return v != NULL && v->data != NULL && v->len >= 2
           && v->data[0] == '{' && v->data[v->len - 1] == '}';
}


int
kr_json_is_array(const kr_str_t *v)
{
    return v != NULL && v->data != NULL && v->len >= 2
           && v->data[0] == '[' && v->data[v->len - 1] == ']';
}


int
kr_json_int(const kr_str_t *v, int64_t *out)
{
    int                   neg;
    uint64_t              n, lim, d;
    const unsigned char  *p, *end;

    if (v == NULL || v->data == NULL || v->len == 0) {
        return -1;
    }

    p = v->data;
    end = p + v->len;
    neg = 0;

    if (*p == '-') {
        neg = 1;
        p++;
    }

    if (p >= end || (*p == '0' && end - p > 1)) {
        return -1;
    }

    lim = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
    n = 0;

    for ( /* void */ ; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        d = (uint64_t) (*p - '0');

        if (n > (lim - d) / 10) {
            return -1;
        }

        n = n * 10 + d;
    }

    if (neg) {
        *out = (n == (uint64_t) INT64_MAX + 1) ? INT64_MIN : -(int64_t) n;

    } else {
        *out = (int64_t) n;
    }

    return 0;
}


int
kr_json_lookup(const kr_str_t *obj, const char *dotted_path, kr_str_t *out)
{
    int              rc, found;
    size_t           n;
    kr_str_t         cur, key, val, hit;
    const char      *seg, *dot;
    kr_json_iter_t   it;

    if (dotted_path == NULL || *dotted_path == '\0') {
        return -1;
    }

    cur = *obj;
    seg = dotted_path;

    for ( ;; ) {
        dot = strchr(seg, '.');
        n = dot ? (size_t) (dot - seg) : strlen(seg);

        if (n == 0) {
            return -1;
        }

        if (kr_json_iter_init(&it, &cur) != 0 || it.type != '{') {
            return (seg == dotted_path) ? -1 : 0;
        }

        found = 0;
        hit.len = 0;
        hit.data = NULL;

        /* the last duplicate wins, as in most parsers */

        while ((rc = kr_json_object_next(&it, &key, &val)) == 1) {
            if (kr_json_key_eqn(&key, seg, n)) {
                hit = val;
                found = 1;
            }
        }

        if (rc < 0) {
            return -1;
        }

        if (!found) {
            return 0;
        }

        cur = hit;

        if (dot == NULL) {
            *out = cur;
            return 1;
        }

        seg = dot + 1;
    }
}
