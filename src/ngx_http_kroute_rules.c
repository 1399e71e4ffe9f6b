
/*
 * Copyright (C) kroute authors
 */

/*
 * Task rules: kroute_task directives that name the task type of the
 * requests they match, ahead of the classifier.  A rule holds PCRE2
 * regexes over the system prompt and the user text (the same bounded
 * head and tail the classifier reads) and structural conditions: tools
 * present, a JSON response format, context and message counts.  All its
 * conditions must hold; the first matching rule wins.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


static ngx_regex_t *ngx_http_kroute_rule_regex(ngx_conf_t *cf,
    ngx_str_t *value, size_t skip);
static ngx_uint_t ngx_http_kroute_rule_text(ngx_http_request_t *r,
    ngx_regex_t *re, const u_char *text, size_t len);


char *
ngx_http_kroute_task_rule(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_loc_conf_t *klcf = conf;

    int                      task;
    ngx_int_t                n;
    ngx_str_t               *value;
    ngx_uint_t               i;
    ngx_http_kroute_rule_t  *rule;

    value = cf->args->elts;

    task = kr_task_index((const char *) value[1].data, value[1].len);
    if (task < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown task type \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (klcf->rules == NGX_CONF_UNSET_PTR) {
        klcf->rules = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_kroute_rule_t));
        if (klcf->rules == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    rule = ngx_array_push(klcf->rules);
    if (rule == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(rule, sizeof(ngx_http_kroute_rule_t));

    rule->task = task;
    rule->tools = -1;
    rule->json = -1;
    rule->index = klcf->rules->nelts;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "system=", 7) == 0) {
            rule->system = ngx_http_kroute_rule_regex(cf, &value[i], 7);
            if (rule->system == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0) {
            rule->user = ngx_http_kroute_rule_regex(cf, &value[i], 5);
            if (rule->user == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "tools") == 0) {
            rule->tools = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "no_tools") == 0) {
            rule->tools = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "json") == 0) {
            rule->json = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "context>", 8) == 0) {
            n = ngx_atoi(value[i].data + 8, value[i].len - 8);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            rule->context_min = n + 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "messages>", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            rule->messages_min = n + 1;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid kroute_task condition \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_regex_t *
ngx_http_kroute_rule_regex(ngx_conf_t *cf, ngx_str_t *value, size_t skip)
{
    u_char               errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t  rc;

    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern.data = value->data + skip;
    rc.pattern.len = value->len - skip;
    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    if (rc.pattern.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty regex in \"%V\"", value);
        return NULL;
    }

    if (ngx_regex_compile(&rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid regex in \"%V\": %V", value, &rc.err);
        return NULL;
    }

    return rc.regex;
}


/* returns the index of the first matching rule, or -1 */

ngx_int_t
ngx_http_kroute_rules_match(ngx_http_request_t *r,
    ngx_http_kroute_loc_conf_t *klcf, kr_classify_input_t *in)
{
    ngx_uint_t               i;
    ngx_http_kroute_rule_t  *rule;

    if (klcf->rules == NULL) {
        return -1;
    }

    rule = klcf->rules->elts;

    for (i = 0; i < klcf->rules->nelts; i++) {

        if (rule[i].tools >= 0 && (ngx_int_t) !!in->has_tools != rule[i].tools)
        {
            continue;
        }

        if (rule[i].json >= 0 && (ngx_int_t) !!in->json_format != rule[i].json)
        {
            continue;
        }

        if (rule[i].context_min && in->context_tokens < rule[i].context_min) {
            continue;
        }

        if (rule[i].messages_min && in->messages < rule[i].messages_min) {
            continue;
        }

        if (rule[i].system
            && !ngx_http_kroute_rule_text(r, rule[i].system, in->system,
                                          in->system_len))
        {
            continue;
        }

        if (rule[i].user
            && !ngx_http_kroute_rule_text(r, rule[i].user, in->user,
                                          in->user_len))
        {
            continue;
        }

        return i;
    }

    return -1;
}


static ngx_uint_t
ngx_http_kroute_rule_text(ngx_http_request_t *r, ngx_regex_t *re,
    const u_char *text, size_t len)
{
    ngx_int_t  rc;
    ngx_str_t  s;

    s.data = text ? (u_char *) text : (u_char *) "";
    s.len = len;

    rc = ngx_regex_exec(re, &s, NULL, 0);

    if (rc >= 0) {
        return 1;
    }

    if (rc != NGX_REGEX_NO_MATCHED) {

        /* e.g. a nested quantifier hitting PCRE2's match limit */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      ngx_regex_exec_n " failed: %i in kroute_task, "
                      "the rule does not match", rc);
    }

    return 0;
}
