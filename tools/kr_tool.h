
/*
 * Copyright (C) kroute authors
 */


/*
 * Shared by kr-train and kr-eval: reading labelled chat requests from
 * JSON lines into classifier inputs the way the gateway builds them, and
 * the quality figures (accuracy, per-task precision, recall, F1, macro-F1
 * and the confusion matrix).
 */


#ifndef _KR_TOOL_H_INCLUDED_
#define _KR_TOOL_H_INCLUDED_


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kr_classify.h"


typedef struct {
    int                   task;
    int                   synthetic;
    char                 *system;
    char                 *user;
    kr_classify_input_t   in;
} kr_tool_row_t;


typedef struct {
    kr_tool_row_t        *rows;
    size_t                n;
    size_t                alloc;
} kr_tool_set_t;


typedef struct {
    unsigned long         m[KR_TASK_N][KR_TASK_N];   /* [gold][pred] */
    unsigned long         n;
} kr_tool_confusion_t;


/* text of a message content: a string or an array of text parts */

static inline char *
kr_tool_content(json_t *content)
{
    size_t   i, len, total;
    char    *s;
    json_t  *part, *text;

    if (json_is_string(content)) {
        return strdup(json_string_value(content));
    }

    total = 0;
    s = NULL;

    if (!json_is_array(content)) {
        return strdup("");
    }

    json_array_foreach(content, i, part) {
        text = json_object_get(part, "text");
        if (!json_is_string(text)) {
            continue;
        }

        len = json_string_length(text);
        s = realloc(s, total + len + 2);
        if (s == NULL) {
            return NULL;
        }

        if (total) {
            s[total++] = '\n';
        }

        memcpy(s + total, json_string_value(text), len);
        total += len;
    }

    if (s == NULL) {
        return strdup("");
    }

    s[total] = '\0';

    return s;
}


static inline int
kr_tool_row(kr_tool_row_t *r, json_t *obj)
{
    size_t       i, total;
    char        *text;
    json_t      *msgs, *m, *role, *rf, *type, *task, *src;
    const char  *rs;

    memset(r, 0, sizeof(*r));

    task = json_object_get(obj, "task");
    r->task = json_is_string(task)
              ? kr_task_index(json_string_value(task),
                              json_string_length(task))
              : -1;

    src = json_object_get(obj, "source");
    r->synthetic = json_is_string(src)
                   && strncmp(json_string_value(src), "synthetic", 9) == 0;

    msgs = json_object_get(obj, "messages");
    if (!json_is_array(msgs)) {
        return -1;
    }

    total = 0;

    json_array_foreach(msgs, i, m) {
        role = json_object_get(m, "role");
        rs = json_is_string(role) ? json_string_value(role) : "";

        text = kr_tool_content(json_object_get(m, "content"));
        if (text == NULL) {
            return -1;
        }

        total += strlen(text);

        if ((strcmp(rs, "system") == 0 || strcmp(rs, "developer") == 0)
            && r->system == NULL)
        {
            r->system = text;

        } else if (strcmp(rs, "user") == 0
                   || (r->user == NULL && i + 1 == json_array_size(msgs)))
        {
            free(r->user);
            r->user = text;

        } else {
            free(text);
        }
    }

    r->in.system = (const unsigned char *) r->system;
    r->in.system_len = r->system ? strlen(r->system) : 0;
    r->in.user = (const unsigned char *) r->user;
    r->in.user_len = r->user ? strlen(r->user) : 0;
    r->in.messages = (unsigned) json_array_size(msgs);
    r->in.context_tokens = total / 4;
    r->in.has_tools = json_object_get(obj, "tools") != NULL
                      || json_object_get(obj, "functions") != NULL;

    rf = json_object_get(obj, "response_format");
    type = json_object_get(rf, "type");
    r->in.json_format = json_is_string(type)
                        && strncmp(json_string_value(type), "json", 4) == 0;

    return 0;
}


static inline int
kr_tool_read(kr_tool_set_t *set, const char *path)
{
    FILE           *fp;
    json_t         *obj;
    size_t          line;
    char           *buf;
    size_t          cap;
    ssize_t         n;
    json_error_t    jerr;
    kr_tool_row_t  *r;

    fp = fopen(path, "r");
    if (fp == NULL) {
        fprintf(stderr, "cannot open \"%s\"\n", path);
        return -1;
    }

    buf = NULL;
    cap = 0;
    line = 0;

    while ((n = getline(&buf, &cap, fp)) > 0) {
        line++;

        if (n <= 1) {
            continue;
        }

        obj = json_loadb(buf, (size_t) n, 0, &jerr);
        if (obj == NULL) {
            fprintf(stderr, "%s:%zu: %s\n", path, line, jerr.text);
            fclose(fp);
            free(buf);
            return -1;
        }

        if (set->n == set->alloc) {
            set->alloc = set->alloc ? set->alloc * 2 : 1024;
            set->rows = realloc(set->rows,
                                set->alloc * sizeof(kr_tool_row_t));
            if (set->rows == NULL) {
                fprintf(stderr, "out of memory\n");
                exit(1);
            }
        }

        r = &set->rows[set->n];

        if (kr_tool_row(r, obj) != 0 || r->task < 0) {
            fprintf(stderr, "%s:%zu: no task or messages\n", path, line);
            json_decref(obj);
            fclose(fp);
            free(buf);
            return -1;
        }

        set->n++;
        json_decref(obj);
    }

    free(buf);
    fclose(fp);

    return 0;
}


static inline double
kr_tool_report(const kr_tool_confusion_t *cm, FILE *out, int verbose)
{
    int            g, p, present;
    double         prec, rec, f1, macro;
    unsigned long  tp, np, ng, ok;

    macro = 0.0;
    ok = 0;
    present = 0;

    if (verbose) {
        fprintf(out, "%-15s %6s %6s %6s %5s\n", "task", "P", "R", "F1", "n");
    }

    for (g = 0; g < KR_TASK_N; g++) {
        tp = cm->m[g][g];
        ok += tp;
        np = 0;
        ng = 0;

        for (p = 0; p < KR_TASK_N; p++) {
            np += cm->m[p][g];
            ng += cm->m[g][p];
        }

        prec = np ? (double) tp / np : 0.0;
        rec = ng ? (double) tp / ng : 0.0;
        f1 = prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0.0;
        /* macro average over the tasks the gold labels hold */

        if (ng) {
            macro += f1;
            present++;
        }

        if (verbose) {
            fprintf(out, "%-15s %6.3f %6.3f %6.3f %5lu\n", kr_task_name(g),
                    prec, rec, f1, ng);
        }
    }

    macro = present ? macro / present : 0.0;

    fprintf(out, "rows %lu accuracy %.4f macro-F1 %.4f\n", cm->n,
            cm->n ? (double) ok / cm->n : 0.0, macro);

    if (verbose) {
        fprintf(out, "confusion (rows gold, columns predicted):\n%15s", "");

        for (p = 0; p < KR_TASK_N; p++) {
            fprintf(out, " %5.5s", kr_task_name(p));
        }

        fprintf(out, "\n");

        for (g = 0; g < KR_TASK_N; g++) {
            fprintf(out, "%-15s", kr_task_name(g));

            for (p = 0; p < KR_TASK_N; p++) {
                fprintf(out, " %5lu", cm->m[g][p]);
            }

            fprintf(out, "\n");
        }
    }

    return macro;
}


#endif /* _KR_TOOL_H_INCLUDED_ */
