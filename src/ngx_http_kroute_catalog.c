
/*
 * Copyright (C) kroute authors
 */

/*
 * The catalog a gateway routes over: providers (where a request goes
 * and with which credential) and models (their provider, prices in USD
 * per million tokens and quality per task type).  Both are read from
 * kroute_provider and kroute_model directives at configuration time;
 * every bad value stops `nginx -t` with the value quoted.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_kroute.h"


static ngx_int_t ngx_http_kroute_read_key(ngx_conf_t *cf,
    ngx_http_kroute_provider_t *p, ngx_str_t *file);
static char *ngx_http_kroute_model_quality(ngx_conf_t *cf,
    ngx_http_kroute_model_t *m, ngx_str_t *list);
static char *ngx_http_kroute_model_aliases(ngx_conf_t *cf,
    ngx_http_kroute_main_conf_t *kmcf, ngx_http_kroute_model_t *m,
    ngx_str_t *list);
static char *ngx_http_kroute_price(ngx_conf_t *cf, ngx_str_t *value,
    size_t skip, uint64_t *price);


char *
ngx_http_kroute_provider(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    ngx_str_t                   *value, key_file;
    ngx_uint_t                   i;
    ngx_http_kroute_provider_t  *p;

    value = cf->args->elts;

    p = kmcf->providers.elts;
    for (i = 0; i < kmcf->providers.nelts; i++) {
        if (p[i].name.len == value[1].len
            && ngx_strncmp(p[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate kroute provider \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    p = ngx_array_push(&kmcf->providers);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(p, sizeof(ngx_http_kroute_provider_t));

    p->name = value[1];
    p->index = kmcf->providers.nelts - 1;
    p->format = NGX_HTTP_KROUTE_FORMAT_OPENAI;
    ngx_str_null(&key_file);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "url=", 4) == 0) {
            p->url.data = value[i].data + 4;
            p->url.len = value[i].len - 4;

            if (!(p->url.len > 7
                  && ngx_strncasecmp(p->url.data, (u_char *) "http://", 7)
                     == 0)
                && !(p->url.len > 8
                     && ngx_strncasecmp(p->url.data,
                                        (u_char *) "https://", 8) == 0))
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid provider url \"%V\", it must "
                                   "start with http:// or https://",
                                   &p->url);
                return NGX_CONF_ERROR;
            }

            while (p->url.len && p->url.data[p->url.len - 1] == '/') {
                p->url.len--;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "key_file=", 9) == 0) {
            key_file.data = value[i].data + 9;
            key_file.len = value[i].len - 9;
            continue;
        }

        if (ngx_strcmp(value[i].data, "format=openai") == 0) {
            p->format = NGX_HTTP_KROUTE_FORMAT_OPENAI;
            continue;
        }

        if (ngx_strcmp(value[i].data, "format=anthropic") == 0) {
            p->format = NGX_HTTP_KROUTE_FORMAT_ANTHROPIC;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid kroute_provider parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (p->url.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "kroute provider \"%V\" has no url=", &p->name);
        return NGX_CONF_ERROR;
    }

    p->host.data = (u_char *) ngx_strstr(p->url.data, "://") + 3;
    p->host.len = p->url.data + p->url.len - p->host.data;

    for (i = 0; i < p->host.len; i++) {
        if (p->host.data[i] == '/') {
            p->host.len = i;
            break;
        }
    }

    if (p->host.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid provider url \"%V\", no host", &p->url);
        return NGX_CONF_ERROR;
    }

    if (key_file.len && ngx_http_kroute_read_key(cf, p, &key_file) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_kroute_read_key(ngx_conf_t *cf, ngx_http_kroute_provider_t *p,
    ngx_str_t *name)
{
    u_char           *buf, *s, *e;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t         path;
    ngx_file_info_t   fi;

    path = *name;

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%s\" failed", path.data);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%s\" failed", path.data);
        (void) ngx_close_file(fd);
        return NGX_ERROR;
    }

    size = (size_t) ngx_file_size(&fi);

    if (size == 0 || size > 4096) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%s\" must hold one key of 1 to 4096 "
                           "bytes", path.data);
        (void) ngx_close_file(fd);
        return NGX_ERROR;
    }

    buf = ngx_pnalloc(cf->pool, size + sizeof("Bearer ") - 1);
    if (buf == NULL) {
        (void) ngx_close_file(fd);
        return NGX_ERROR;
    }

    s = buf + sizeof("Bearer ") - 1;

    n = ngx_read_fd(fd, s, size);

    (void) ngx_close_file(fd);

    if (n != (ssize_t) size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_read_fd_n " \"%s\" failed", path.data);
        return NGX_ERROR;
    }

    e = s + size;

    while (s < e && (*s == ' ' || *s == '\t' || *s == CR || *s == LF)) {
        s++;
    }

    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == CR
                     || e[-1] == LF))
    {
        e--;
    }

    if (s == e) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%s\" is empty", path.data);
        return NGX_ERROR;
    }

    for (buf = s; buf < e; buf++) {
        if (*buf < 0x21 || *buf > 0x7e) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key file \"%s\" holds a character not "
                               "allowed in a key", path.data);
            return NGX_ERROR;
        }
    }

    p->key.data = s;
    p->key.len = e - s;

    p->authorization.data = s - (sizeof("Bearer ") - 1);
    ngx_memcpy(p->authorization.data, "Bearer ", sizeof("Bearer ") - 1);
    p->authorization.len = p->key.len + sizeof("Bearer ") - 1;

    return NGX_OK;
}


char *
ngx_http_kroute_model(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    char                        *rv;
    ngx_int_t                    n;
    ngx_str_t                   *value, s;
    ngx_uint_t                   i, j, have_input, have_output;
    ngx_http_kroute_model_t     *m;
    ngx_http_kroute_provider_t  *p;

    value = cf->args->elts;

    if (ngx_http_kroute_find_model(kmcf, value[1].data, value[1].len)
        != NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate kroute model \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    m = ngx_array_push(&kmcf->models);
    if (m == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(m, sizeof(ngx_http_kroute_model_t));

    m->name = value[1];
    m->index = kmcf->models.nelts - 1;
    m->output_tokens = 0;

    for (j = 0; j < KR_TASK_N; j++) {
        m->quality[j] = -1;
    }

    have_input = 0;
    have_output = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "provider=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            p = kmcf->providers.elts;
            for (j = 0; j < kmcf->providers.nelts; j++) {
                if (p[j].name.len == s.len
                    && ngx_strncmp(p[j].name.data, s.data, s.len) == 0)
                {
                    m->provider = &p[j];
                    break;
                }
            }

            if (m->provider == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown kroute provider \"%V\" for "
                                   "model \"%V\"", &s, &m->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "input=", 6) == 0) {
            rv = ngx_http_kroute_price(cf, &value[i], 6, &m->price.input);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            have_input = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "output=", 7) == 0) {
            rv = ngx_http_kroute_price(cf, &value[i], 7, &m->price.output);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            have_output = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "cached=", 7) == 0) {
            rv = ngx_http_kroute_price(cf, &value[i], 7, &m->price.cached);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            m->price.has_cached = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "cache_write=", 12) == 0) {
            rv = ngx_http_kroute_price(cf, &value[i], 12,
                                       &m->price.cache_write);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            m->price.has_cache_write = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "quality=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            rv = ngx_http_kroute_model_quality(cf, m, &s);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "alias=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            rv = ngx_http_kroute_model_aliases(cf, kmcf, m, &s);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "output_tokens=", 14) == 0) {
            n = ngx_atoi(value[i].data + 14, value[i].len - 14);
            if (n <= 0 || n > 10000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid output_tokens \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            m->output_tokens = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid kroute_model parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (m->provider == NULL || !have_input || !have_output) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "kroute model \"%V\" needs provider=, input= "
                           "and output=", &m->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_kroute_price(ngx_conf_t *cf, ngx_str_t *value, size_t skip,
    uint64_t *price)
{
    if (kr_price_parse(value->data + skip, value->len - skip, price) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid price \"%V\", expected USD per 1M "
                           "tokens with at most 6 decimals", value);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_kroute_model_quality(ngx_conf_t *cf, ngx_http_kroute_model_t *m,
    ngx_str_t *list)
{
    u_char     *p, *last, *item, *colon;
    ngx_int_t   score, task, def;
    ngx_uint_t  j;
    ngx_str_t   bad;

    def = -1;
    p = list->data;
    last = list->data + list->len;

    while (p < last) {
        item = p;

        while (p < last && *p != ',') {
            p++;
        }

        colon = ngx_strlchr(item, p, ':');

        bad.data = item;
        bad.len = p - item;

        if (colon == NULL) {
            goto invalid;
        }

        score = ngx_atoi(colon + 1, p - colon - 1);
        if (score == NGX_ERROR || score > 100) {
            goto invalid;
        }

        if (colon - item == 7 && ngx_strncmp(item, "default", 7) == 0) {
            def = score;

        } else {
            task = kr_task_index((const char *) item, colon - item);
            if (task < 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown task type in quality \"%V\"",
                                   &bad);
                return NGX_CONF_ERROR;
            }

            m->quality[task] = score;
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

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid quality \"%V\", expected task:0..100",
                       &bad);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_kroute_model_aliases(ngx_conf_t *cf,
    ngx_http_kroute_main_conf_t *kmcf, ngx_http_kroute_model_t *m,
    ngx_str_t *list)
{
    u_char     *p, *last, *item;
    ngx_str_t  *alias;

    p = list->data;
    last = list->data + list->len;

    m->aliases = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    if (m->aliases == NULL) {
        return NGX_CONF_ERROR;
    }

    while (p < last) {
        item = p;

        while (p < last && *p != ',') {
            p++;
        }

        if (p == item) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty alias in \"%V\"", list);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_kroute_find_model(kmcf, item, p - item) != NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "alias \"%*s\" already names a model",
                               p - item, item);
            return NGX_CONF_ERROR;
        }

        alias = ngx_array_push(m->aliases);
        if (alias == NULL) {
            return NGX_CONF_ERROR;
        }

        alias->data = item;
        alias->len = p - item;

        if (p < last) {
            p++;
        }
    }

    return NGX_CONF_OK;
}


ngx_http_kroute_model_t *
ngx_http_kroute_find_model(ngx_http_kroute_main_conf_t *kmcf, u_char *name,
    size_t len)
{
    ngx_str_t                *a;
    ngx_uint_t                i, j;
    ngx_http_kroute_model_t  *m;

    m = kmcf->models.elts;

    for (i = 0; i < kmcf->models.nelts; i++) {

        if (m[i].name.len == len
            && ngx_strncmp(m[i].name.data, name, len) == 0)
        {
            return &m[i];
        }

        if (m[i].aliases == NULL) {
            continue;
        }

        a = m[i].aliases->elts;

        for (j = 0; j < m[i].aliases->nelts; j++) {
            if (a[j].len == len && ngx_strncmp(a[j].data, name, len) == 0) {
                return &m[i];
            }
        }
    }

    return NULL;
}


/*
 * kroute_task_name task name;  the name a task type goes by in the trace,
 * the headers, the metrics and Redis.  Two tasks given one name are
 * reported as one; routing still tells them apart.
 */

char *
ngx_http_kroute_task_name(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    int         task;
    ngx_str_t  *value;
    ngx_uint_t  i;

    value = cf->args->elts;

    task = kr_task_index((const char *) value[1].data, value[1].len);
    if (task < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown task type \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (kmcf->task_names[task].data) {
        return "is duplicate";
    }

    if (value[2].len == 0 || value[2].len > 32) {
        goto invalid;
    }

    /* the labels of requests without a task */

    if ((value[2].len == 4 && ngx_strncmp(value[2].data, "none", 4) == 0)
        || (value[2].len == 8
            && ngx_strncmp(value[2].data, "unparsed", 8) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "task name \"%V\" is reserved", &value[2]);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < value[2].len; i++) {
        if (!((value[2].data[i] >= 'a' && value[2].data[i] <= 'z')
              || (value[2].data[i] >= '0' && value[2].data[i] <= '9')
              || value[2].data[i] == '_' || value[2].data[i] == '-'))
        {
            goto invalid;
        }
    }

    kmcf->task_names[task] = value[2];

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid task name \"%V\", expected 1 to 32 of "
                       "a-z, 0-9, \"_\" and \"-\"", &value[2]);
    return NGX_CONF_ERROR;
}


ngx_str_t *
ngx_http_kroute_task_label(ngx_http_request_t *r, ngx_uint_t task)
{
    ngx_http_kroute_main_conf_t  *kmcf;

    kmcf = ngx_http_get_module_main_conf(r, ngx_http_kroute_module);

    return &kmcf->task_names[task];
}
