
/*
 * Copyright (C) kroute authors
 */


/*
 * libFuzzer target for request extraction and rewrite: any body either
 * parses or is refused with a message, and the rewrite of a parsed body
 * is always valid JSON.  Build: clang -fsanitize=fuzzer,address,undefined
 * -Isrc t/unit/fuzz_request.c src/kr_json.c src/kr_request.c
 */


#include <stdlib.h>
#include <string.h>

#include "kr_request.h"


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    int             n, i;
    size_t          len;
    kr_str_t        seg[KR_REWRITE_SEGS], nm;
    const char     *err;
    kr_request_t    req;
    unsigned char  *p, *out, scratch[128], text[64];

    p = malloc(size ? size : 1);
    memcpy(p, data, size);

    if (kr_request_parse(&req, p, size, &err) != 0) {
        if (err == NULL) {
            abort();
        }

        free(p);
        return 0;
    }

    (void) kr_request_text(&req.last_user_content, text, sizeof(text), 20,
                           20);
    (void) kr_request_text(&req.system_content, text, sizeof(text), 100, 0);
    (void) kr_request_estimate_input_tokens(&req);

    nm.data = (const unsigned char *) "m\"\\\x01";
    nm.len = 4;
    req.stream = 1;

    n = kr_request_rewrite(&req, p, size, &nm, 1, seg, scratch,
                           sizeof(scratch));
    if (n <= 0) {
        abort();
    }

    len = 0;

    for (i = 0; i < n; i++) {
        len += seg[i].len;
    }

    out = malloc(len);
    len = 0;

    for (i = 0; i < n; i++) {
        memcpy(out + len, seg[i].data, seg[i].len);
        len += seg[i].len;
    }

    if (kr_json_validate(out, len, NULL) != 0) {
        abort();
    }

    free(out);
    free(p);

    return 0;
}
