
/*
 * Copyright (C) kroute authors
 */


/*
 * kr-replay: what routing would do to recorded traffic.  It reads chat
 * requests as JSON lines and a model catalog in the module's directive
 * syntax, classifies and routes every request the way the gateway does,
 * and prints the task mix, the routed model mix and the expected cost of
 * that mix against sending everything to one frontier model.
 *
 *   kr-replay --catalog FILE [--bar N] [--baseline MODEL] [--alias NAME]
 *             [--json] [--explain] REQUESTS.jsonl
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kr_classify.h"
#include "kr_json.h"
#include "kr_price.h"
#include "kr_request.h"
#include "kr_route.h"


#define KR_REPLAY_MODELS_MAX    256
#define KR_REPLAY_ALIASES_MAX   512
#define KR_REPLAY_PROVIDERS_MAX 64
#define KR_REPLAY_ARGS_MAX      64
#define KR_REPLAY_LINES_SHOWN   20
#define KR_REPLAY_MODEL_LEN     256


typedef struct {
    char                 *text;
    size_t                len;
    unsigned              line;
} kr_replay_token_t;


typedef struct {
    char                 *name;
    int                   model;
} kr_replay_alias_t;


typedef struct {
    unsigned              line;
    const char           *error;
} kr_replay_bad_t;


typedef struct {
    const char           *path;
    char                 *buf;             /* names point into it */
    kr_route_model_t      models[KR_REPLAY_MODELS_MAX];
    size_t                n_models;
    kr_replay_alias_t     aliases[KR_REPLAY_ALIASES_MAX];
    size_t                n_aliases;
    char                 *providers[KR_REPLAY_PROVIDERS_MAX];
    size_t                n_providers;
} kr_replay_catalog_t;


typedef struct {
    unsigned long         lines;           /* non-blank lines */
    unsigned long         requests;        /* parsed chat requests */
    unsigned long         routed;
    unsigned long         pinned;
    unsigned long         invalid_json;
    unsigned long         invalid_request;
    unsigned long         unknown_model;
    unsigned long         unrouted;        /* no model meets the bar */
    unsigned long         tasks[KR_TASK_N];
    unsigned long         model_count[KR_REPLAY_MODELS_MAX];
    uint64_t              model_cost[KR_REPLAY_MODELS_MAX];
    uint64_t              routed_cost;
    uint64_t              baseline_cost;
    kr_replay_bad_t       bad[KR_REPLAY_LINES_SHOWN];    /* first ones */
    size_t                n_bad;
} kr_replay_totals_t;


static void kr_replay_usage(FILE *f);
static int kr_replay_catalog(kr_replay_catalog_t *cat, const char *path);
static int kr_replay_statement(kr_replay_catalog_t *cat,
    kr_replay_token_t *tok, size_t n);
static int kr_replay_quality(kr_replay_catalog_t *cat,
    kr_route_model_t *m, kr_replay_token_t *tok, size_t skip);
static int kr_replay_find(const kr_replay_catalog_t *cat, const char *name,
    size_t len);
static int kr_replay_line(const kr_replay_catalog_t *cat,
    kr_replay_totals_t *t, unsigned char *line, size_t len, unsigned lineno,
    int bar, int baseline, const char *alias, FILE *explain);
static void kr_replay_text(const kr_replay_catalog_t *cat,
    const kr_replay_totals_t *t, int bar, int baseline);
static int kr_replay_json(const kr_replay_catalog_t *cat,
    const kr_replay_totals_t *t, int bar, int baseline);
static void kr_replay_pct(char *buf, size_t size, uint64_t part,
    uint64_t whole);
static const char *kr_replay_usd(char *buf, uint64_t pusd);
static const char *kr_replay_saving(char *buf, const kr_replay_totals_t *t,
    char *pct, size_t pct_size);
static uint64_t kr_replay_add(uint64_t a, uint64_t b);


static const char  *kr_replay_prog = "kr-replay";


int
main(int argc, char **argv)
{
    int                   i, bar, json, baseline, rc, explain;
    char                 *end;
    FILE                 *f;
    size_t                size, k;
    ssize_t               len;
    unsigned              lineno;
    const char           *catalog, *requests, *baseline_name, *alias;
    unsigned char        *line;
    kr_replay_totals_t   *t;
    kr_replay_catalog_t  *cat;

    catalog = NULL;
    requests = NULL;
    baseline_name = NULL;
    alias = "auto";
    bar = 0;
    json = 0;
    explain = 0;

    for (i = 1; i < argc; i++) {

        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            kr_replay_usage(stdout);
            return 0;
        }

        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            continue;
        }

        if (strcmp(argv[i], "--explain") == 0) {
            explain = 1;
            continue;
        }

        if (strcmp(argv[i], "--catalog") == 0
            || strcmp(argv[i], "--bar") == 0
            || strcmp(argv[i], "--baseline") == 0
            || strcmp(argv[i], "--alias") == 0)
        {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a value\n", kr_replay_prog,
                        argv[i]);
                kr_replay_usage(stderr);
                return 2;
            }

            if (strcmp(argv[i], "--catalog") == 0) {
                catalog = argv[++i];

            } else if (strcmp(argv[i], "--baseline") == 0) {
                baseline_name = argv[++i];

            } else if (strcmp(argv[i], "--alias") == 0) {
                alias = argv[++i];

                if (*alias == '\0' || strlen(alias) >= KR_REPLAY_MODEL_LEN
                    || strpbrk(alias, "\"\\") != NULL)
                {
                    fprintf(stderr, "%s: --alias \"%s\" is not a usable "
                            "model name\n", kr_replay_prog, alias);
                    return 2;
                }

            } else {
                errno = 0;
                bar = (int) strtol(argv[++i], &end, 10);

                if (errno || *end != '\0' || end == argv[i] || bar < 0
                    || bar > 100)
                {
                    fprintf(stderr, "%s: --bar \"%s\" is not a number from "
                            "0 to 100\n", kr_replay_prog, argv[i]);
                    return 2;
                }
            }

            continue;
        }

        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "%s: unknown option \"%s\"\n", kr_replay_prog,
                    argv[i]);
            kr_replay_usage(stderr);
            return 2;
        }

        if (requests != NULL) {
            fprintf(stderr, "%s: one requests file only\n", kr_replay_prog);
            kr_replay_usage(stderr);
            return 2;
        }

        requests = argv[i];
    }

    if (catalog == NULL || requests == NULL) {
        fprintf(stderr, "%s: %s\n", kr_replay_prog,
                catalog == NULL ? "--catalog FILE is required"
                                : "a requests file is required");
        kr_replay_usage(stderr);
        return 2;
    }

    cat = calloc(1, sizeof(kr_replay_catalog_t));
    t = calloc(1, sizeof(kr_replay_totals_t));
    f = NULL;
    line = NULL;
    rc = 2;

    if (cat == NULL || t == NULL) {
        fprintf(stderr, "%s: out of memory\n", kr_replay_prog);
        goto done;
    }

    if (kr_replay_catalog(cat, catalog) != 0) {
        goto done;
    }

    if (baseline_name != NULL) {
        baseline = kr_replay_find(cat, baseline_name, strlen(baseline_name));

        if (baseline < 0) {
            fprintf(stderr, "%s: baseline model \"%s\" is not in the "
                    "catalog\n", kr_replay_prog, baseline_name);
            goto done;
        }

    } else {
        /* the dearest output, then the dearest input, first listed */

        baseline = 0;

        for (i = 1; i < (int) cat->n_models; i++) {
            if (cat->models[i].price.output
                > cat->models[baseline].price.output
                || (cat->models[i].price.output
                    == cat->models[baseline].price.output
                    && cat->models[i].price.input
                       > cat->models[baseline].price.input))
            {
                baseline = i;
            }
        }
    }

    f = strcmp(requests, "-") == 0 ? stdin : fopen(requests, "r");

    if (f == NULL) {
        fprintf(stderr, "%s: cannot open requests \"%s\": %s\n",
                kr_replay_prog, requests, strerror(errno));
        goto done;
    }

    size = 0;
    lineno = 0;

    while ((len = getline((char **) &line, &size, f)) >= 0) {
        lineno++;

        if (kr_replay_line(cat, t, line, (size_t) len, lineno, bar, baseline,
                           alias, explain ? stderr : NULL)
            != 0)
        {
            fprintf(stderr, "%s: out of memory\n", kr_replay_prog);
            goto done;
        }
    }

    if (ferror(f)) {
        fprintf(stderr, "%s: cannot read requests \"%s\": %s\n",
                kr_replay_prog, requests, strerror(errno));
        goto done;
    }

    if (json) {
        rc = kr_replay_json(cat, t, bar, baseline);

    } else {
        kr_replay_text(cat, t, bar, baseline);
        rc = 0;
    }

done:

    if (f != NULL && f != stdin) {
        fclose(f);
    }

    free(line);

    if (cat != NULL) {
        for (k = 0; k < cat->n_providers; k++) {
            free(cat->providers[k]);
        }

        for (k = 0; k < cat->n_aliases; k++) {
            free(cat->aliases[k].name);
        }

        free(cat->buf);
        free(cat);
    }

    free(t);

    return rc;
}


static void
kr_replay_usage(FILE *f)
{
    fprintf(f,
        "usage: kr-replay --catalog FILE [--bar N] [--baseline MODEL]\n"
        "                 [--alias NAME] [--json] [--explain] "
        "REQUESTS.jsonl\n"
        "\n"
        "  REQUESTS.jsonl  one chat-completion body per line (\"-\" reads\n"
        "                  stdin); a line without \"model\" is routed\n"
        "  --catalog FILE  kroute_model directives as in nginx.conf\n"
        "  --bar N         quality bar 0..100 (default 0)\n"
        "  --baseline M    model to compare with (default: the dearest\n"
        "                  output price)\n"
        "  --alias NAME    model name that asks for routing (default auto)\n"
        "  --json          machine-readable output\n"
        "  --explain       each routing decision on stderr\n");
}


/*
 * Reads the catalog as nginx would tokenise it: words separated by
 * space, "#" comments, quoted words, statements ended by ";", blocks in
 * braces.  Only kroute_model statements are read.
 */

static int
kr_replay_catalog(kr_replay_catalog_t *cat, const char *path)
{
    int                 quote;
    char               *buf, *p, *end, *w;
    long                size;
    FILE               *f;
    size_t              n;
    unsigned            line;
    kr_replay_token_t   tok[KR_REPLAY_ARGS_MAX];

    cat->path = path;

    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open catalog \"%s\": %s\n",
                kr_replay_prog, path, strerror(errno));
        return -1;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        fprintf(stderr, "%s: cannot read catalog \"%s\": %s\n",
                kr_replay_prog, path, strerror(errno));
        fclose(f);
        return -1;
    }

    buf = malloc((size_t) size + 1);
    cat->buf = buf;

    if (buf == NULL || fread(buf, 1, (size_t) size, f) != (size_t) size) {
        fprintf(stderr, "%s: cannot read catalog \"%s\"\n", kr_replay_prog,
                path);
        fclose(f);
        return -1;
    }

    fclose(f);

    buf[size] = '\0';
    p = buf;
    end = buf + size;
    line = 1;
    n = 0;

    while (p < end) {

        if (*p == '\n') {
            line++;
            p++;
            continue;
        }

        if (*p == ' ' || *p == '\t' || *p == '\r') {
            p++;
            continue;
        }

        if (*p == '#') {
            while (p < end && *p != '\n') {
                p++;
            }

            continue;
        }

        if (*p == ';' || *p == '{' || *p == '}') {
            if (*p == ';' && n > 0) {
                if (kr_replay_statement(cat, tok, n) != 0) {
                    return -1;
                }
            }

            /* a block opener or closer ends whatever precedes it */

            n = 0;
            p++;
            continue;
        }

        if (n == KR_REPLAY_ARGS_MAX) {
            fprintf(stderr, "%s: %s:%u: too many parameters\n",
                    kr_replay_prog, path, line);
            return -1;
        }

        tok[n].line = line;

        if (*p == '"' || *p == '\'') {
            quote = *p++;
            w = p;
            tok[n].text = w;

            while (p < end && *p != quote) {
                if (*p == '\\' && p + 1 < end) {
                    p++;
                }

                if (*p == '\n') {
                    line++;
                }

                *w++ = *p++;
            }

            if (p == end) {
                fprintf(stderr, "%s: %s:%u: unterminated quote\n",
                        kr_replay_prog, path, tok[n].line);
                return -1;
            }

            p++;
            tok[n].len = w - tok[n].text;

        } else {
            tok[n].text = p;

            while (p < end && *p != ' ' && *p != '\t' && *p != '\r'
                   && *p != '\n' && *p != ';' && *p != '{' && *p != '}')
            {
                p++;
            }

            tok[n].len = p - tok[n].text;
        }

        n++;
    }

    if (n > 0 && tok[0].len == 12
        && memcmp(tok[0].text, "kroute_model", 12) == 0)
    {
        fprintf(stderr, "%s: %s:%u: kroute_model without a closing \";\"\n",
                kr_replay_prog, path, tok[0].line);
        return -1;
    }

    if (cat->n_models == 0) {
        fprintf(stderr, "%s: %s: no kroute_model in the catalog\n",
                kr_replay_prog, path);
        return -1;
    }

    return 0;
}


#define kr_replay_is(t, s)                                                   \
    ((t)->len > sizeof(s) - 1 && memcmp((t)->text, s, sizeof(s) - 1) == 0)


static int
kr_replay_statement(kr_replay_catalog_t *cat, kr_replay_token_t *tok,
    size_t n)
{
    int                j, have_input, have_output, have_provider;
    char              *p, *last, *item, *end;
    size_t             i, k, skip;
    uint64_t          *price;
    unsigned long      num;
    kr_route_model_t  *m;

    if (tok[0].len != 12 || memcmp(tok[0].text, "kroute_model", 12) != 0) {
        return 0;
    }

    if (n < 2) {
        fprintf(stderr, "%s: %s:%u: kroute_model needs a name\n",
                kr_replay_prog, cat->path, tok[0].line);
        return -1;
    }

    if (cat->n_models == KR_REPLAY_MODELS_MAX) {
        fprintf(stderr, "%s: %s:%u: more than %d models\n", kr_replay_prog,
                cat->path, tok[0].line, KR_REPLAY_MODELS_MAX);
        return -1;
    }

    if (kr_replay_find(cat, tok[1].text, tok[1].len) >= 0) {
        fprintf(stderr, "%s: %s:%u: duplicate model \"%.*s\"\n",
                kr_replay_prog, cat->path, tok[1].line, (int) tok[1].len,
                tok[1].text);
        return -1;
    }

    m = &cat->models[cat->n_models];
    memset(m, 0, sizeof(kr_route_model_t));
    m->name.data = (const unsigned char *) tok[1].text;
    m->name.len = tok[1].len;

    for (j = 0; j < KR_TASK_N; j++) {
        m->quality[j] = -1;
    }

    have_input = 0;
    have_output = 0;
    have_provider = 0;

    for (i = 2; i < n; i++) {
        price = NULL;
        skip = 0;

        if (kr_replay_is(&tok[i], "provider=")) {
            p = tok[i].text + 9;
            k = tok[i].len - 9;

            for (j = 0; j < (int) cat->n_providers; j++) {
                if (strlen(cat->providers[j]) == k
                    && memcmp(cat->providers[j], p, k) == 0)
                {
                    break;
                }
            }

            if (j == (int) cat->n_providers) {
                if (cat->n_providers == KR_REPLAY_PROVIDERS_MAX) {
                    fprintf(stderr, "%s: %s:%u: too many providers\n",
                            kr_replay_prog, cat->path, tok[i].line);
                    return -1;
                }

                cat->providers[j] = strndup(p, k);
                if (cat->providers[j] == NULL) {
                    return -1;
                }

                cat->n_providers++;
            }

            m->provider = (unsigned) j;
            have_provider = 1;
            continue;
        }

        if (kr_replay_is(&tok[i], "input=")) {
            price = &m->price.input;
            skip = 6;
            have_input = 1;

        } else if (kr_replay_is(&tok[i], "output=")) {
            price = &m->price.output;
            skip = 7;
            have_output = 1;

        } else if (kr_replay_is(&tok[i], "cached=")) {
            price = &m->price.cached;
            skip = 7;
            m->price.has_cached = 1;

        } else if (kr_replay_is(&tok[i], "cache_write=")) {
            price = &m->price.cache_write;
            skip = 12;
            m->price.has_cache_write = 1;
        }

        if (price != NULL) {
            if (kr_price_parse((const unsigned char *) tok[i].text + skip,
                               tok[i].len - skip, price)
                != 0)
            {
                fprintf(stderr, "%s: %s:%u: invalid price \"%.*s\", "
                        "expected USD per 1M tokens with at most 6 "
                        "decimals\n", kr_replay_prog, cat->path,
                        tok[i].line, (int) tok[i].len, tok[i].text);
                return -1;
            }

            continue;
        }

        if (kr_replay_is(&tok[i], "quality=")) {
            if (kr_replay_quality(cat, m, &tok[i], 8) != 0) {
                return -1;
            }

            continue;
        }

        if (kr_replay_is(&tok[i], "alias=")) {
            p = tok[i].text + 6;
            last = tok[i].text + tok[i].len;

            while (p <= last) {
                item = p;

                while (p < last && *p != ',') {
                    p++;
                }

                if (p == item
                    || kr_replay_find(cat, item, p - item) >= 0
                    || ((size_t) (p - item) == m->name.len
                        && memcmp(item, m->name.data, m->name.len) == 0))
                {
                    fprintf(stderr, "%s: %s:%u: invalid alias \"%.*s\": "
                            "empty or already a model name\n",
                            kr_replay_prog, cat->path, tok[i].line,
                            (int) (p - item), item);
                    return -1;
                }

                if (cat->n_aliases == KR_REPLAY_ALIASES_MAX) {
                    fprintf(stderr, "%s: %s:%u: too many aliases\n",
                            kr_replay_prog, cat->path, tok[i].line);
                    return -1;
                }

                cat->aliases[cat->n_aliases].name = strndup(item, p - item);
                if (cat->aliases[cat->n_aliases].name == NULL) {
                    return -1;
                }

                cat->aliases[cat->n_aliases].model = (int) cat->n_models;
                cat->n_aliases++;
                p++;
            }

            continue;
        }

        if (kr_replay_is(&tok[i], "output_tokens=")) {
            errno = 0;
            num = strtoul(tok[i].text + 14, &end, 10);

            if (errno || end != tok[i].text + tok[i].len || num == 0
                || num > 10000000 || tok[i].text[14] == '-')
            {
                fprintf(stderr, "%s: %s:%u: invalid output_tokens "
                        "\"%.*s\"\n", kr_replay_prog, cat->path,
                        tok[i].line, (int) tok[i].len, tok[i].text);
                return -1;
            }

            m->output_tokens = num;
            continue;
        }

        fprintf(stderr, "%s: %s:%u: invalid kroute_model parameter "
                "\"%.*s\"\n", kr_replay_prog, cat->path, tok[i].line,
                (int) tok[i].len, tok[i].text);
        return -1;
    }

    if (!have_provider || !have_input || !have_output) {
        fprintf(stderr, "%s: %s:%u: model \"%.*s\" needs provider=, input= "
                "and output=\n", kr_replay_prog, cat->path, tok[0].line,
                (int) m->name.len, (const char *) m->name.data);
        return -1;
    }

    cat->n_models++;

    return 0;
}


static int
kr_replay_quality(kr_replay_catalog_t *cat, kr_route_model_t *m,
    kr_replay_token_t *tok, size_t skip)
{
    int    task, def, j;
    long   score;
    char  *p, *last, *item, *colon, *end;

    def = -1;
    p = tok->text + skip;
    last = tok->text + tok->len;

    while (p < last) {
        item = p;

        while (p < last && *p != ',') {
            p++;
        }

        colon = memchr(item, ':', p - item);

        if (colon == NULL || colon == item || colon + 1 == p) {
            goto invalid;
        }

        score = strtol(colon + 1, &end, 10);

        if (end != p || score < 0 || score > 100 || colon[1] == '-'
            || colon[1] == '+')
        {
            goto invalid;
        }

        if (colon - item == 7 && memcmp(item, "default", 7) == 0) {
            def = (int) score;

        } else {
            task = kr_task_index(item, colon - item);

            if (task < 0) {
                fprintf(stderr, "%s: %s:%u: unknown task type \"%.*s\" in "
                        "\"%.*s\"\n", kr_replay_prog, cat->path, tok->line,
                        (int) (colon - item), item, (int) tok->len,
                        tok->text);
                return -1;
            }

            m->quality[task] = (int) score;
        }

        if (p < last) {
            p++;
        }
    }

    if (def >= 0) {
        for (j = 0; j < KR_TASK_N; j++) {
            if (m->quality[j] < 0) {
                m->quality[j] = def;
            }
        }
    }

    return 0;

invalid:

    fprintf(stderr, "%s: %s:%u: invalid quality \"%.*s\", expected "
            "task:0..100,...\n", kr_replay_prog, cat->path, tok->line,
            (int) tok->len, tok->text);

    return -1;
}


static int
kr_replay_find(const kr_replay_catalog_t *cat, const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < cat->n_models; i++) {
        if (cat->models[i].name.len == len
            && memcmp(cat->models[i].name.data, name, len) == 0)
        {
            return (int) i;
        }
    }

    for (i = 0; i < cat->n_aliases; i++) {
        if (strlen(cat->aliases[i].name) == len
            && memcmp(cat->aliases[i].name, name, len) == 0)
        {
            return cat->aliases[i].model;
        }
    }

    return -1;
}


/* classifies and routes one line; -1 only when out of memory */

static int
kr_replay_line(const kr_replay_catalog_t *cat, kr_replay_totals_t *t,
    unsigned char *line, size_t len, unsigned lineno, int bar, int baseline,
    const char *alias, FILE *explain)
{
    int                    task, chosen, found, members;
    char                   why[KR_ROUTE_EXPLAIN_LEN], usd[KR_USD_LEN + 1];
    size_t                 i, alen, mlen;
    uint64_t               cost;
    kr_str_t               obj, model, key;
    const char            *err;
    kr_json_iter_t         it;
    unsigned char         *body, *open;
    unsigned char          system[KR_CLASSIFY_SYSTEM_MAX];
    unsigned char          user[KR_CLASSIFY_HEAD_MAX + KR_CLASSIFY_TAIL_MAX
                                + 1];
    unsigned char          name[KR_REPLAY_MODEL_LEN];
    kr_request_t           req;
    kr_route_input_t       in;
    kr_route_result_t      res;
    kr_classify_input_t    cin;
    kr_classify_result_t   cres;

    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'
                   || line[len - 1] == ' ' || line[len - 1] == '\t'))
    {
        len--;
    }

    for (i = 0; i < len && (line[i] == ' ' || line[i] == '\t'); i++) {
        /* void */
    }

    if (i == len) {
        return 0;
    }

    t->lines++;

    if (kr_json_value(line, len, &obj) != 0
        || kr_json_validate(obj.data, obj.len, NULL) != 0)
    {
        if (t->n_bad < KR_REPLAY_LINES_SHOWN) {
            t->bad[t->n_bad].line = lineno;
            t->bad[t->n_bad].error = "not valid JSON";
            t->n_bad++;
        }

        t->invalid_json++;
        return 0;
    }

    /* a labelled prompt line without "model" asks for routing */

    body = line;
    found = kr_json_is_object(&obj) ? kr_json_lookup(&obj, "model", &model)
                                    : 1;
    open = NULL;

    if (found == 0) {
        if (kr_json_iter_init(&it, &obj) != 0) {
            return 0;
        }

        members = kr_json_object_next(&it, &key, &model) == 1;

        alen = strlen(alias);
        open = malloc(len + alen + 16);
        if (open == NULL) {
            return -1;
        }

        /* up to and including the "{", the model, then the rest */

        i = obj.data - line + 1;
        memcpy(open, line, i);
        mlen = i + (size_t) sprintf((char *) open + i, "\"model\":\"%s\"%s",
                                    alias, members ? "," : "");
        memcpy(open + mlen, line + i, len - i);
        len = mlen + len - i;
        body = open;
    }

    if (kr_request_parse(&req, body, len, &err) != 0) {
        if (t->n_bad < KR_REPLAY_LINES_SHOWN) {
            t->bad[t->n_bad].line = lineno;
            t->bad[t->n_bad].error = err;
            t->n_bad++;
        }

        t->invalid_request++;
        free(open);
        return 0;
    }

    t->requests++;

    memset(&cin, 0, sizeof(kr_classify_input_t));

    if (req.system_index >= 0) {
        cin.system = system;
        cin.system_len = kr_request_text(&req.system_content, system,
                                         sizeof(system), sizeof(system), 0);
    }

    if (req.last_user_index >= 0) {
        cin.user = user;
        cin.user_len = kr_request_text(&req.last_user_content, user,
                                       sizeof(user), KR_CLASSIFY_HEAD_MAX,
                                       KR_CLASSIFY_TAIL_MAX);
    }

    memset(&in, 0, sizeof(kr_route_input_t));
    in.est_input = kr_request_estimate_input_tokens(&req);

    cin.context_tokens = in.est_input;
    cin.messages = req.n_messages;
    cin.has_tools = req.has_tools;
    cin.json_format = req.response_format == KR_RESPONSE_FORMAT_JSON_OBJECT
                      || req.response_format
                         == KR_RESPONSE_FORMAT_JSON_SCHEMA;

    task = kr_classify(kr_classifier_default(), &cin, &cres);

    if (task < 0 || task >= KR_TASK_N) {
        task = KR_TASK_QA;
    }

    t->tasks[task]++;

    in.max_tokens = req.max_tokens;
    in.max_completion_tokens = req.max_completion_tokens;
    in.n = req.n;
    in.task = task;
    in.bar = bar;
    in.format = 0;
    in.sticky = req.user.len ? kr_route_hash(req.user.data, req.user.len)
                             : lineno;

    mlen = kr_json_string_decode(&req.model, name, sizeof(name));

    free(open);

    if (mlen == strlen(alias) && memcmp(name, alias, mlen) == 0) {
        res.explain = why;
        res.explain_size = sizeof(why);

        chosen = kr_route_pick(cat->models, cat->n_models, &in, &res);

        if (explain) {
            fprintf(explain, "line %u: input=%llu %s\n", lineno,
                    (unsigned long long) in.est_input, why);
        }

        if (chosen < 0) {
            t->unrouted++;
            return 0;
        }

        cost = res.cost_pusd;
        t->routed++;

    } else {
        chosen = kr_replay_find(cat, (const char *) name, mlen);

        if (chosen < 0) {
            t->unknown_model++;

            if (explain) {
                fprintf(explain, "line %u: input=%llu task=%s unknown "
                        "model \"%.*s\"\n", lineno,
                        (unsigned long long) in.est_input,
                        kr_task_name(task), (int) mlen, (const char *) name);
            }

            return 0;
        }

        cost = kr_route_expected_cost(cat->models, chosen, &in, NULL);
        t->pinned++;

        if (explain) {
            fprintf(explain, "line %u: input=%llu task=%s pinned=%.*s "
                    "cost=%s\n", lineno, (unsigned long long) in.est_input,
                    kr_task_name(task), (int) cat->models[chosen].name.len,
                    (const char *) cat->models[chosen].name.data,
                    kr_replay_usd(usd, cost));
        }
    }

    t->model_count[chosen]++;
    t->model_cost[chosen] = kr_replay_add(t->model_cost[chosen], cost);
    t->routed_cost = kr_replay_add(t->routed_cost, cost);
    t->baseline_cost = kr_replay_add(t->baseline_cost,
                                     kr_route_expected_cost(cat->models,
                                                            baseline, &in,
                                                            NULL));

    return 0;
}


static void
kr_replay_text(const kr_replay_catalog_t *cat, const kr_replay_totals_t *t,
    int bar, int baseline)
{
    int            i;
    char           pct[32], usd[KR_USD_LEN + 1], usd2[KR_USD_LEN + 1];
    size_t         k;
    unsigned long  served;

    served = t->routed + t->pinned;

    printf("lines              %lu\n", t->lines);
    printf("requests           %lu\n", t->requests);
    printf("  routed           %lu\n", t->routed);
    printf("  pinned           %lu\n", t->pinned);
    printf("  unknown model    %lu\n", t->unknown_model);
    printf("  no model for bar %lu\n", t->unrouted);
    printf("invalid json       %lu\n", t->invalid_json);
    printf("invalid request    %lu\n", t->invalid_request);

    for (k = 0; k < t->n_bad; k++) {
        printf("  line %u: %s\n", t->bad[k].line, t->bad[k].error);
    }

    if (t->invalid_json + t->invalid_request > t->n_bad) {
        printf("  ...\n");
    }

    printf("bar                %d\n", bar);

    printf("\n%-16s %8s %7s\n", "task", "requests", "share");

    for (i = 0; i < KR_TASK_N; i++) {
        kr_replay_pct(pct, sizeof(pct), t->tasks[i], t->requests);
        printf("%-16s %8lu %7s\n", kr_task_name(i), t->tasks[i], pct);
    }

    printf("\n%-24s %8s %7s %18s\n", "model", "requests", "share",
           "expected_usd");

    for (k = 0; k < cat->n_models; k++) {
        if (t->model_count[k] == 0) {
            continue;
        }

        kr_replay_pct(pct, sizeof(pct), t->model_count[k], served);
        printf("%-24.*s %8lu %7s %18s\n", (int) cat->models[k].name.len,
               (const char *) cat->models[k].name.data, t->model_count[k],
               pct, kr_replay_usd(usd, t->model_cost[k]));
    }

    printf("\n%-24s %18s\n", "expected cost", "usd");
    printf("%-24s %18s\n", "routed", kr_replay_usd(usd, t->routed_cost));
    printf("baseline %-15.*s %18s\n", (int) cat->models[baseline].name.len,
           (const char *) cat->models[baseline].name.data,
           kr_replay_usd(usd, t->baseline_cost));

    kr_replay_saving(usd2, t, pct, sizeof(pct));
    printf("%-24s %18s %7s\n", "saving", usd2, pct);
}


static int
kr_replay_json(const kr_replay_catalog_t *cat, const kr_replay_totals_t *t,
    int bar, int baseline)
{
    int      i, rc;
    char     pct[32], usd[KR_USD_LEN + 1];
    char    *s;
    size_t   k;
    json_t  *root, *tasks, *models, *bad, *cost;

    root = json_object();
    tasks = json_array();
    models = json_array();
    bad = json_array();
    cost = json_object();

    if (root == NULL || tasks == NULL || models == NULL || bad == NULL
        || cost == NULL)
    {
        return 2;
    }

    json_object_set_new(root, "lines", json_integer(t->lines));
    json_object_set_new(root, "requests", json_integer(t->requests));
    json_object_set_new(root, "routed", json_integer(t->routed));
    json_object_set_new(root, "pinned", json_integer(t->pinned));
    json_object_set_new(root, "unknown_model",
                        json_integer(t->unknown_model));
    json_object_set_new(root, "no_model_meets_bar",
                        json_integer(t->unrouted));
    json_object_set_new(root, "invalid_json", json_integer(t->invalid_json));
    json_object_set_new(root, "invalid_request",
                        json_integer(t->invalid_request));
    json_object_set_new(root, "bar", json_integer(bar));

    for (k = 0; k < t->n_bad; k++) {
        json_array_append_new(bad, json_pack("{s:I,s:s}", "line",
                                             (json_int_t) t->bad[k].line,
                                             "error", t->bad[k].error));
    }

    json_object_set_new(root, "bad_lines", bad);

    for (i = 0; i < KR_TASK_N; i++) {
        kr_replay_pct(pct, sizeof(pct), t->tasks[i], t->requests);
        pct[strlen(pct) - 1] = '\0';
        json_array_append_new(tasks,
                              json_pack("{s:s,s:I,s:s}", "task",
                                        kr_task_name(i), "requests",
                                        (json_int_t) t->tasks[i],
                                        "share_pct", pct));
    }

    json_object_set_new(root, "tasks", tasks);

    for (k = 0; k < cat->n_models; k++) {
        if (t->model_count[k] == 0) {
            continue;
        }

        kr_replay_pct(pct, sizeof(pct), t->model_count[k],
                      t->routed + t->pinned);
        pct[strlen(pct) - 1] = '\0';
        json_array_append_new(models,
            json_pack("{s:s%,s:I,s:s,s:I,s:s}",
                      "model", (const char *) cat->models[k].name.data,
                      cat->models[k].name.len,
                      "requests", (json_int_t) t->model_count[k],
                      "share_pct", pct,
                      "expected_cost_pusd", (json_int_t) t->model_cost[k],
                      "expected_cost_usd",
                      kr_replay_usd(usd, t->model_cost[k])));
    }

    json_object_set_new(root, "models", models);

    json_object_set_new(cost, "routed_pusd",
                        json_integer((json_int_t) t->routed_cost));
    json_object_set_new(cost, "routed_usd",
                        json_string(kr_replay_usd(usd, t->routed_cost)));
    json_object_set_new(cost, "baseline_model",
                        json_stringn((const char *)
                                         cat->models[baseline].name.data,
                                     cat->models[baseline].name.len));
    json_object_set_new(cost, "baseline_pusd",
                        json_integer((json_int_t) t->baseline_cost));
    json_object_set_new(cost, "baseline_usd",
                        json_string(kr_replay_usd(usd, t->baseline_cost)));
    json_object_set_new(cost, "saving_pusd",
                        json_integer((json_int_t) t->baseline_cost
                                     - (json_int_t) t->routed_cost));
    json_object_set_new(cost, "saving_usd",
                        json_string(kr_replay_saving(usd, t, pct,
                                                     sizeof(pct))));
    pct[strlen(pct) - 1] = '\0';
    json_object_set_new(cost, "saving_pct", json_string(pct));
    json_object_set_new(root, "expected_cost", cost);

    s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s == NULL) {
        return 2;
    }

    rc = puts(s) < 0 ? 2 : 0;

    free(s);
    json_decref(root);

    return rc;
}


/* "25.0%": one decimal, rounded half up; "-" when there is no whole */

static void
kr_replay_pct(char *buf, size_t size, uint64_t part, uint64_t whole)
{
    uint64_t  tenths;

    if (whole == 0) {
        snprintf(buf, size, "-%%");
        return;
    }

    tenths = (part * 1000 + whole / 2) / whole;
    snprintf(buf, size, "%llu.%llu%%", (unsigned long long) (tenths / 10),
             (unsigned long long) (tenths % 10));
}


static const char *
kr_replay_usd(char *buf, uint64_t pusd)
{
    size_t  len;

    len = kr_usd_format((unsigned char *) buf, pusd);
    buf[len] = '\0';

    return buf;
}


/* signed saving against the baseline, and its share of the baseline */

static const char *
kr_replay_saving(char *buf, const kr_replay_totals_t *t, char *pct,
    size_t pct_size)
{
    int       neg;
    uint64_t  d;

    neg = t->routed_cost > t->baseline_cost;
    d = neg ? t->routed_cost - t->baseline_cost
            : t->baseline_cost - t->routed_cost;

    buf[0] = '-';
    kr_replay_usd(buf + neg, d);

    kr_replay_pct(pct + neg, pct_size - 1, d, t->baseline_cost);

    if (neg) {
        pct[0] = '-';
    }

    return buf;
}


static uint64_t
kr_replay_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}
