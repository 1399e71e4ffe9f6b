
/*
 * Copyright (C) kroute authors
 */


/*
 * A small TAP producer for kroute's C unit tests: ok/is checks with
 * diagnostics, a final plan, and fixture loading relative to the
 * repository root (KR_FIXTURES overrides the fixture directory).
 */


#ifndef _KR_TAP_H_INCLUDED_
#define _KR_TAP_H_INCLUDED_


#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int  tap_count;
static int  tap_failed;


static inline void
tap_vok(int cond, const char *file, int line, const char *fmt, va_list ap)
{
    char  *c, msg[256];

    tap_count++;

    vsnprintf(msg, sizeof(msg), fmt, ap);

    /* a description stays on one line whatever it quotes */
    for (c = msg; *c; c++) {
        if ((unsigned char) *c < 0x20 || *c == '#') {
            *c = '?';
        }
    }

    printf("%sok %d - %s\n", cond ? "" : "not ", tap_count, msg);

    if (!cond) {
        tap_failed++;
        printf("#   Failed test at %s line %d\n", file, line);
    }

    fflush(stdout);
}


static inline int
tap_ok_(int cond, const char *file, int line, const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    tap_vok(cond, file, line, fmt, ap);
    va_end(ap);

    return cond;
}


static inline int
tap_is_int_(int64_t got, int64_t want, const char *file, int line,
    const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    tap_vok(got == want, file, line, fmt, ap);
    va_end(ap);

    if (got != want) {
        printf("#          got: %" PRId64 "\n#     expected: %" PRId64 "\n",
               got, want);
    }

    return got == want;
}


static inline int
tap_is_uint_(uint64_t got, uint64_t want, const char *file, int line,
    const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    tap_vok(got == want, file, line, fmt, ap);
    va_end(ap);

    if (got != want) {
        printf("#          got: %" PRIu64 "\n#     expected: %" PRIu64 "\n",
               got, want);
    }

    return got == want;
}


static inline int
tap_is_mem_(const void *got, size_t glen, const char *want, const char *file,
    int line, const char *fmt, ...)
{
    int      eq;
    size_t   wlen;
    va_list  ap;

    wlen = strlen(want);
    eq = (got != NULL && glen == wlen && memcmp(got, want, wlen) == 0);

    va_start(ap, fmt);
    tap_vok(eq, file, line, fmt, ap);
    va_end(ap);

    if (!eq) {
        printf("#          got: '%.*s'\n#     expected: '%s'\n",
               got ? (int) glen : 6, got ? (const char *) got : "(null)",
               want);
    }

    return eq;
}


#define ok(c, ...)                                                          \
    tap_ok_(!!(c), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(g, w, ...)                                                   \
    tap_is_int_((int64_t) (g), (int64_t) (w), __FILE__, __LINE__, __VA_ARGS__)
#define is_uint(g, w, ...)                                                  \
    tap_is_uint_((uint64_t) (g), (uint64_t) (w), __FILE__, __LINE__,       \
                 __VA_ARGS__)
#define is_mem(g, l, w, ...)                                                \
    tap_is_mem_((g), (l), (w), __FILE__, __LINE__, __VA_ARGS__)
#define is_str(g, w, ...)                                                   \
    tap_is_mem_((g), (g) ? strlen(g) : 0, (w), __FILE__, __LINE__,          \
                __VA_ARGS__)


static inline int
tap_done(void)
{
    printf("1..%d\n", tap_count);

    if (tap_failed) {
        printf("# failed %d of %d tests\n", tap_failed, tap_count);
    }

    return tap_failed ? 1 : 0;
}


static const char *tap_fixture_dir = "t/fixtures/providers";


static inline void
tap_init(int argc, char **argv)
{
    const char  *env;

    env = getenv("KR_FIXTURES");

    if (argc > 1) {
        tap_fixture_dir = argv[1];

    } else if (env != NULL && *env != '\0') {
        tap_fixture_dir = env;
    }
}


/* reads a fixture into malloc'ed memory, exits the test on failure */
static inline unsigned char *
tap_fixture(const char *name, size_t *len)
{
    char            path[1024];
    long            n;
    FILE           *f;
    unsigned char  *buf;

    snprintf(path, sizeof(path), "%s/%s", tap_fixture_dir, name);

    f = fopen(path, "rb");
    if (f == NULL) {
        printf("Bail out! cannot open fixture %s\n", path);
        exit(255);
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    /* exact-size allocation so that ASan catches any overread */
    buf = malloc(n > 0 ? (size_t) n : 1);
    if (buf == NULL || fread(buf, 1, (size_t) n, f) != (size_t) n) {
        printf("Bail out! cannot read fixture %s\n", path);
        exit(255);
    }

    fclose(f);
    *len = (size_t) n;

    return buf;
}


/* exact-size heap copy of a C string (no terminator), for overread checks */
static inline unsigned char *
tap_dup(const char *s, size_t *len)
{
    unsigned char  *p;

    *len = strlen(s);
    p = malloc(*len ? *len : 1);
    if (p == NULL) {
        printf("Bail out! out of memory\n");
        exit(255);
    }

    memcpy(p, s, *len);

    return p;
}


#endif /* _KR_TAP_H_INCLUDED_ */
