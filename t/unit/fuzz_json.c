
/*
 * Copyright (C) kroute authors
 */


/*
 * libFuzzer target for the JSON scanner: validation must agree with a
 * full iteration of the value, and decoding and lookups must stay in
 * bounds on any input.  Build: clang -fsanitize=fuzzer,address,undefined
 * -Isrc t/unit/fuzz_json.c src/kr_json.c
 */


#include <stdlib.h>
#include <string.h>

#include "kr_json.h"


static int
walk(const kr_str_t *v, int depth)
{
    int             rc;
    kr_str_t        key, val;
    unsigned char   buf[32];
    kr_json_iter_t  it;

    if (kr_json_iter_init(&it, v) != 0) {
        if (kr_json_is_string(v)) {
            (void) kr_json_string_decode(v, buf, sizeof(buf));
            (void) kr_json_string_decoded_len(v);
        }

        return 0;
    }

    if (depth > KR_JSON_MAX_DEPTH) {
        abort();
    }

    if (it.type == '{') {
        while ((rc = kr_json_object_next(&it, &key, &val)) == 1) {
            (void) kr_json_key_eq(&key, "usage");

            if (walk(&val, depth + 1) != 0) {
                return -1;
            }
        }

    } else {
        while ((rc = kr_json_array_next(&it, &val)) == 1) {
            if (walk(&val, depth + 1) != 0) {
                return -1;
            }
        }
    }

    return rc == 0 ? 0 : -1;
}


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    int64_t         iv;
    kr_str_t        v, out;
    unsigned char  *p;

    p = malloc(size ? size : 1);
    memcpy(p, data, size);

    if (kr_json_validate(p, size, NULL) == 0) {
        if (kr_json_value(p, size, &v) != 0 || walk(&v, 0) != 0) {
            abort();
        }

        (void) kr_json_lookup(&v, "usage.prompt_tokens_details.cached", &out);
        (void) kr_json_int(&v, &iv);

    } else {
        v.data = p;
        v.len = size;
        (void) walk(&v, 0);
        (void) kr_json_lookup(&v, "a.b", &out);
        (void) kr_json_skip(p, p + size);
        (void) kr_json_int(&v, &iv);
        (void) kr_json_string_decoded_len(&v);
    }

    free(p);

    return 0;
}
