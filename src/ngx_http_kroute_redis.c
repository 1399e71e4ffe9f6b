
/*
 * Copyright (C) kroute authors
 */

/*
 * Metering to Redis without blocking a worker.  Every request adds its
 * counts to deltas kept in the shared zone: per hour and attribution
 * dimensions, and per day and user.  Worker 0 flushes them on a timer as
 * one Lua script call per batch, over a hiredis connection driven by
 * nginx's event loop.  A batch carries an id that the script records
 * with SET NX before applying it, so a batch whose reply was lost is
 * sent again and applied exactly once.  While Redis is down the deltas
 * wait in the zone, bounded by its size.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_kroute.h"


#define NGX_HTTP_KROUTE_KIND_HOUR        0
#define NGX_HTTP_KROUTE_KIND_USER        1
#define NGX_HTTP_KROUTE_KIND_USER_FEAT   2
#define NGX_HTTP_KROUTE_KIND_USER_COHORT 3

#define NGX_HTTP_KROUTE_BATCH_RECORDS    2000


typedef struct {
    ngx_rbtree_node_t              node;
    ngx_queue_t                    queue;
    uint32_t                       bucket;      /* YYYYMMDDHH or YYYYMMDD */
    u_char                         kind;
    u_short                        keylen;
    uint64_t                       value[NGX_HTTP_KROUTE_NMETRICS];
    u_char                         data[1];
} ngx_http_kroute_delta_t;


typedef struct {
    redisAsyncContext             *ac;
    ngx_connection_t              *c;
    ngx_event_t                    tick;
    ngx_event_t                    timeout;
    ngx_http_kroute_redis_conf_t  *conf;
    ngx_http_kroute_shm_t         *shm;
    ngx_log_t                     *log;
    uint64_t                       sent_id;
    u_char                         sha[41];
    ngx_uint_t                     batch_max;
    ngx_msec_t                     nomem_logged;
    ngx_msec_t                     error_logged;
    u_char                         moved_host[NGX_INET_ADDRSTRLEN + 1];
    ngx_uint_t                     moved_port;
    unsigned                       connecting:1;
    unsigned                       connected:1;
    unsigned                       outstanding:1;
    unsigned                       reconnect:1;
} ngx_http_kroute_link_t;


static void ngx_http_kroute_delta_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_kroute_delta_add(ngx_http_kroute_shm_t *shm,
    ngx_uint_t kind, uint32_t bucket, u_char *key, size_t len,
    uint64_t *value, ngx_uint_t n, ngx_log_t *log);
static void ngx_http_kroute_redis_tick(ngx_event_t *ev);
static void ngx_http_kroute_redis_timeout(ngx_event_t *ev);
static ngx_uint_t ngx_http_kroute_redis_log_ok(ngx_http_kroute_link_t *lk);
static ngx_int_t ngx_http_kroute_redis_connect(ngx_http_kroute_link_t *lk);
static void ngx_http_kroute_redis_drop(ngx_http_kroute_link_t *lk,
    const char *why);
static void ngx_http_kroute_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_kroute_redis_on_disconnect(const redisAsyncContext *ac,
    int status);
static void ngx_http_kroute_redis_on_reply(redisAsyncContext *ac,
    void *reply, void *privdata);
static ngx_int_t ngx_http_kroute_redis_moved(ngx_http_kroute_link_t *lk,
    redisReply *rr);
static void ngx_http_kroute_redis_on_setup(redisAsyncContext *ac,
    void *reply, void *privdata);
static ngx_int_t ngx_http_kroute_redis_cut(ngx_http_kroute_link_t *lk);
static void ngx_http_kroute_redis_send(ngx_http_kroute_link_t *lk);
static void ngx_http_kroute_ev_add_read(void *privdata);
static void ngx_http_kroute_ev_del_read(void *privdata);
static void ngx_http_kroute_ev_add_write(void *privdata);
static void ngx_http_kroute_ev_del_write(void *privdata);
static void ngx_http_kroute_ev_cleanup(void *privdata);
static void ngx_http_kroute_redis_read(ngx_event_t *ev);
static void ngx_http_kroute_redis_write(ngx_event_t *ev);


/*
 * KEYS[1] is the batch marker; KEYS[2..] are hashes, each with its
 * field count in ARGV followed by field, increment pairs.  A field that
 * cannot take its increment (a wrong type, an overflow) does not stop
 * the others: the marker is set, so the batch must apply whole.
 */

static const char  ngx_http_kroute_script[] =
    "if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then "
        "return 0 "
    "end "
    "local a = 2 "
    "for k = 2, #KEYS do "
        "local n = tonumber(ARGV[a]) "
        "a = a + 1 "
        "for j = 1, n do "
            "redis.pcall('HINCRBY', KEYS[k], ARGV[a], ARGV[a + 1]) "
            "a = a + 2 "
        "end "
    "end "
    "return 1";


static const char  *ngx_http_kroute_metric_names[] = {
    "req", "err", "in", "out", "cached", "cw", "reason", "cost_pusd",
    "lat_ms", "ttft_ms", "unparsed", "estimated"
};

static const char  *ngx_http_kroute_kind_names[] = {
    "h", "ud", "ufd", "ucd"
};

static const char  *ngx_http_kroute_user_metric_names[] = {
    "req", "in", "out", "cost_pusd"
};


static ngx_http_kroute_link_t  ngx_http_kroute_link;


char *
ngx_http_kroute_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_kroute_main_conf_t *kmcf = conf;

    u_char                        *p;
    ssize_t                        n;
    ngx_fd_t                       fd;
    ngx_int_t                      port;
    ngx_str_t                     *value, s, path;
    ngx_uint_t                     i;
    ngx_http_kroute_redis_conf_t  *rc;

    if (kmcf->redis) {
        return "is duplicate";
    }

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_http_kroute_redis_conf_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    ngx_str_set(&rc->prefix, "kroute:");
    rc->instance = cf->cycle->hostname;
    rc->interval = 1000;
    rc->timeout = 1000;
    rc->db = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "unix:", 5) == 0) {
            rc->unix_path.data = value[i].data + 5;
            rc->unix_path.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rc->prefix.data = value[i].data + 7;
            rc->prefix.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "instance=", 9) == 0) {
            rc->instance.data = value[i].data + 9;
            rc->instance.len = value[i].len - 9;

            if (rc->instance.len == 0
                || ngx_strlchr(rc->instance.data,
                               rc->instance.data + rc->instance.len, '}'))
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            rc->db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (rc->db == NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            rc->interval = ngx_parse_time(&s, 0);
            if (rc->interval == (ngx_msec_t) NGX_ERROR || rc->interval == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            rc->timeout = ngx_parse_time(&s, 0);
            if (rc->timeout == (ngx_msec_t) NGX_ERROR || rc->timeout == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            path.data = value[i].data + 14;
            path.len = value[i].len - 14;

            if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
            if (fd == NGX_INVALID_FILE) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                                   ngx_open_file_n " \"%s\" failed",
                                   path.data);
                return NGX_CONF_ERROR;
            }

            p = ngx_pnalloc(cf->pool, 513);
            if (p == NULL) {
                (void) ngx_close_file(fd);
                return NGX_CONF_ERROR;
            }

            n = ngx_read_fd(fd, p, 512);
            (void) ngx_close_file(fd);

            while (n > 0 && (p[n - 1] == LF || p[n - 1] == CR
                             || p[n - 1] == ' '))
            {
                n--;
            }

            if (n <= 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "redis password file \"%s\" is empty",
                                   path.data);
                return NGX_CONF_ERROR;
            }

            p[n] = '\0';
            rc->password.data = p;
            rc->password.len = n;
            continue;
        }

        /* an IPv4 address and port: hiredis resolves names blocking */

        p = ngx_strlchr(value[i].data, value[i].data + value[i].len, ':');

        if (p == NULL || rc->host.len) {
            goto invalid;
        }

        if (ngx_inet_addr(value[i].data, p - value[i].data) == INADDR_NONE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "kroute_redis address \"%V\" must be an "
                               "IPv4 address and port or unix:PATH",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        port = ngx_atoi(p + 1, value[i].data + value[i].len - p - 1);
        if (port < 1 || port > 65535) {
            goto invalid;
        }

        rc->host.len = p - value[i].data;
        rc->host.data = ngx_pnalloc(cf->pool, rc->host.len + 1);
        if (rc->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        (void) ngx_cpystrn(rc->host.data, value[i].data, rc->host.len + 1);
        rc->port = port;
    }

    if (rc->host.len == 0 && rc->unix_path.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "kroute_redis needs an address");
        return NGX_CONF_ERROR;
    }

    if (rc->unix_path.len) {
        p = ngx_pnalloc(cf->pool, rc->unix_path.len + 1);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        (void) ngx_cpystrn(p, rc->unix_path.data, rc->unix_path.len + 1);
        rc->unix_path.data = p;
    }

    kmcf->redis = rc;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid kroute_redis parameter \"%V\"", &value[i]);
    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_kroute_redis_init_zone(ngx_http_kroute_shm_t *shm, size_t size)
{
    ngx_rbtree_init(&shm->sh->deltas, &shm->sh->delta_sentinel,
                    ngx_http_kroute_delta_insert_value);
    ngx_queue_init(&shm->sh->delta_queue);

    shm->sh->boot = ((uint64_t) ngx_time() << 20)
                    ^ ((uint64_t) ngx_random() & 0xfffff);

    /*
     * The batch on its way to Redis has a buffer of its own, an eighth
     * of the zone: a zone full of deltas can still send them.
     */

    size = ngx_min(ngx_max(size / 8, 4096), 1024 * 1024);

    shm->sh->batch_buf = ngx_slab_alloc(shm->shpool, size);
    if (shm->sh->batch_buf == NULL) {
        return NGX_ERROR;
    }

    shm->sh->batch_size = size;

    return NGX_OK;
}


static void
ngx_http_kroute_delta_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_int_t                  rc;
    ngx_rbtree_node_t        **p;
    ngx_http_kroute_delta_t   *d, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else { /* node->key == temp->key */

            d = (ngx_http_kroute_delta_t *) node;
            t = (ngx_http_kroute_delta_t *) temp;

            rc = (ngx_int_t) d->kind - (ngx_int_t) t->kind;

            if (rc == 0) {
                rc = (d->bucket < t->bucket) ? -1
                     : (d->bucket > t->bucket) ? 1 : 0;
            }

            if (rc == 0) {
                rc = ngx_memn2cmp(d->data, t->data, d->keylen, t->keylen);
            }

            p = (rc < 0) ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* called with the zone mutex held */

static void
ngx_http_kroute_delta_add(ngx_http_kroute_shm_t *shm, ngx_uint_t kind,
    uint32_t bucket, u_char *key, size_t len, uint64_t *value, ngx_uint_t n,
    ngx_log_t *log)
{
    uint32_t                  hash;
    ngx_int_t                 rc;
    ngx_uint_t                i;
    ngx_rbtree_node_t        *node, *sentinel;
    ngx_http_kroute_delta_t  *d;

    hash = ngx_crc32_short(key, len) ^ bucket ^ (uint32_t) kind;

    node = shm->sh->deltas.root;
    sentinel = shm->sh->deltas.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        d = (ngx_http_kroute_delta_t *) node;

        rc = (ngx_int_t) kind - (ngx_int_t) d->kind;

        if (rc == 0) {
            rc = (bucket < d->bucket) ? -1 : (bucket > d->bucket) ? 1 : 0;
        }

        if (rc == 0) {
            rc = ngx_memn2cmp(key, d->data, len, d->keylen);
        }

        if (rc == 0) {
            for (i = 0; i < n; i++) {
                d->value[i] += value[i];
            }

            return;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    d = ngx_slab_calloc_locked(shm->shpool,
                               offsetof(ngx_http_kroute_delta_t, data) + len);
    if (d == NULL) {
        shm->sh->redis_drops++;

        if (shm->sh->redis_drop_logged == 0
            || ngx_current_msec - shm->sh->redis_drop_logged > 60000)
        {
            shm->sh->redis_drop_logged = ngx_current_msec;
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "kroute zone is full of deltas waiting for "
                          "Redis, %uL dropped so far", shm->sh->redis_drops);
        }

        return;
    }

    d->node.key = hash;
    d->kind = (u_char) kind;
    d->bucket = bucket;
    d->keylen = (u_short) len;
    ngx_memcpy(d->data, key, len);

    for (i = 0; i < n; i++) {
        d->value[i] = value[i];
    }

    ngx_rbtree_insert(&shm->sh->deltas, &d->node);
    ngx_queue_insert_tail(&shm->sh->delta_queue, &d->queue);
    shm->sh->ndeltas++;
}


/*
 * Adds a finished request to the deltas waiting for Redis; called with
 * the zone mutex held, key is the series key (six dimensions joined by
 * 0x1f, then the status class, which Redis does not get).
 */

void
ngx_http_kroute_redis_account(ngx_http_request_t *r,
    ngx_http_kroute_ctx_t *ctx, ngx_http_kroute_shm_t *shm, ngx_str_t *key,
    uint64_t *value)
{
    u_char      *p;
    u_char       buf[256 + NGX_HTTP_KROUTE_DIM_MAX + 1];
    size_t       len;
    uint32_t     hour, day;
    ngx_uint_t   n;
    uint64_t     user[4];
    ngx_tm_t     tm;

    ngx_gmtime(ngx_time(), &tm);

    day = (uint32_t) tm.ngx_tm_year * 10000 + tm.ngx_tm_mon * 100
          + tm.ngx_tm_mday;
    hour = day * 100 + tm.ngx_tm_hour;

    /* the series key up to the agent: Redis has no arm or status */

    for (len = 0, n = 0; len < key->len; len++) {
        if (key->data[len] == 0x1f && ++n == NGX_HTTP_KROUTE_REDIS_DIMS) {
            break;
        }
    }

    ngx_http_kroute_delta_add(shm, NGX_HTTP_KROUTE_KIND_HOUR, hour,
                              key->data, len, value,
                              NGX_HTTP_KROUTE_NMETRICS, r->connection->log);

    if (ctx->user.len == 0) {
        return;
    }

    user[0] = 1;
    user[1] = value[NGX_HTTP_KROUTE_M_IN];
    user[2] = value[NGX_HTTP_KROUTE_M_OUT];
    user[3] = value[NGX_HTTP_KROUTE_M_COST];

    ngx_http_kroute_delta_add(shm, NGX_HTTP_KROUTE_KIND_USER, day,
                              ctx->user.data, ctx->user.len, user, 4,
                              r->connection->log);

    p = ngx_cpymem(buf, ctx->user.data, ngx_min(ctx->user.len, 256));
    *p++ = 0x1f;
    p = ngx_cpymem(p, ctx->dims[NGX_HTTP_KROUTE_DIM_FEATURE].data,
                   ngx_min(ctx->dims[NGX_HTTP_KROUTE_DIM_FEATURE].len,
                           NGX_HTTP_KROUTE_DIM_MAX));

    ngx_http_kroute_delta_add(shm, NGX_HTTP_KROUTE_KIND_USER_FEAT, day,
                              buf, p - buf, user, 4, r->connection->log);

    p = ngx_cpymem(buf, ctx->user.data, ngx_min(ctx->user.len, 256));
    *p++ = 0x1f;
    p = ngx_cpymem(p, ctx->dims[NGX_HTTP_KROUTE_DIM_COHORT].data,
                   ngx_min(ctx->dims[NGX_HTTP_KROUTE_DIM_COHORT].len,
                           NGX_HTTP_KROUTE_DIM_MAX));

    ngx_http_kroute_delta_add(shm, NGX_HTTP_KROUTE_KIND_USER_COHORT, day,
                              buf, p - buf, user, 4, r->connection->log);
}


ngx_int_t
ngx_http_kroute_redis_init_process(ngx_cycle_t *cycle)
{
    u_char                        digest[20];
    ngx_sha1_t                    sha1;
    ngx_http_kroute_link_t       *lk;
    ngx_http_kroute_main_conf_t  *kmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    kmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_kroute_module);

    if (kmcf == NULL || kmcf->redis == NULL || kmcf->shm_zone == NULL) {
        return NGX_OK;
    }

    /* one flusher per instance; batch ids keep a reload overlap safe */

    if (ngx_worker != 0) {
        return NGX_OK;
    }

    lk = &ngx_http_kroute_link;

    ngx_memzero(lk, sizeof(ngx_http_kroute_link_t));

    lk->conf = kmcf->redis;
    lk->shm = kmcf->shm_zone->data;
    lk->log = cycle->log;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, ngx_http_kroute_script,
                    sizeof(ngx_http_kroute_script) - 1);
    ngx_sha1_final(digest, &sha1);
    ngx_hex_dump(lk->sha, digest, 20);

    lk->tick.handler = ngx_http_kroute_redis_tick;
    lk->tick.data = lk;
    lk->tick.log = cycle->log;
    lk->tick.cancelable = 1;

    lk->timeout.handler = ngx_http_kroute_redis_timeout;
    lk->timeout.data = lk;
    lk->timeout.log = cycle->log;
    lk->timeout.cancelable = 1;

    ngx_add_timer(&lk->tick, lk->conf->interval);

    return NGX_OK;
}


void
ngx_http_kroute_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_kroute_link_t  *lk;

    lk = &ngx_http_kroute_link;

    if (lk->conf == NULL) {
        return;
    }

    if (lk->ac) {
        ngx_http_kroute_redis_drop(lk, NULL);
    }
}


static void
ngx_http_kroute_redis_tick(ngx_event_t *ev)
{
    ngx_http_kroute_link_t *lk = ev->data;

    if (ngx_exiting) {
        /* the in-flight batch stays in the zone for the next worker */
        return;
    }

    ngx_add_timer(&lk->tick, lk->conf->interval);

    if (lk->ac == NULL) {
        (void) ngx_http_kroute_redis_connect(lk);
        return;
    }

    if (!lk->connected || lk->outstanding) {
        return;
    }

    if (lk->reconnect) {
        lk->reconnect = 0;
        ngx_http_kroute_redis_drop(lk, NULL);
        return;
    }

    if (ngx_http_kroute_redis_cut(lk) != NGX_OK) {
        return;
    }

    ngx_http_kroute_redis_send(lk);
}


static ngx_int_t
ngx_http_kroute_redis_connect(ngx_http_kroute_link_t *lk)
{
    redisAsyncContext  *ac;
    ngx_connection_t   *c;

    if (lk->conf->unix_path.len) {
        ac = redisAsyncConnectUnix((const char *) lk->conf->unix_path.data);

    } else if (lk->moved_port) {
        ac = redisAsyncConnect((const char *) lk->moved_host,
                               (int) lk->moved_port);

    } else {
        ac = redisAsyncConnect((const char *) lk->conf->host.data,
                               (int) lk->conf->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ALERT, lk->log, 0,
                      "kroute: redisAsyncConnect() failed");
        return NGX_ERROR;
    }

    if (ac->err) {
        if (!lk->shm->sh->redis_down_logged) {
            ngx_log_error(NGX_LOG_ERR, lk->log, 0,
                          "kroute: cannot connect to redis: %s",
                          ac->errstr);
            lk->shm->sh->redis_down_logged = 1;
        }

        redisAsyncFree(ac);
        lk->shm->sh->redis_failures++;
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, lk->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c->data = lk;
    c->read->handler = ngx_http_kroute_redis_read;
    c->write->handler = ngx_http_kroute_redis_write;
    c->read->log = lk->log;
    c->write->log = lk->log;
    c->log = lk->log;

    lk->ac = ac;
    lk->c = c;
    lk->connecting = 1;
    lk->connected = 0;
    lk->outstanding = 0;

    ac->data = lk;
    ac->ev.data = c;
    ac->ev.addRead = ngx_http_kroute_ev_add_read;
    ac->ev.delRead = ngx_http_kroute_ev_del_read;
    ac->ev.addWrite = ngx_http_kroute_ev_add_write;
    ac->ev.delWrite = ngx_http_kroute_ev_del_write;
    ac->ev.cleanup = ngx_http_kroute_ev_cleanup;

    (void) redisAsyncSetConnectCallback(ac, ngx_http_kroute_redis_on_connect);
    (void) redisAsyncSetDisconnectCallback(ac,
                                        ngx_http_kroute_redis_on_disconnect);

    /* hiredis waits for writability to learn the connect result */

    ngx_http_kroute_ev_add_write(c);

    ngx_add_timer(&lk->timeout, lk->conf->timeout);

    return NGX_OK;
}


/* never called from inside a hiredis callback */

static void
ngx_http_kroute_redis_drop(ngx_http_kroute_link_t *lk, const char *why)
{
    redisAsyncContext  *ac;

    if (why && ngx_http_kroute_redis_log_ok(lk)) {
        ngx_log_error(NGX_LOG_ERR, lk->log, 0, "kroute: redis %s", why);
    }

    if (lk->timeout.timer_set) {
        ngx_del_timer(&lk->timeout);
    }

    ac = lk->ac;

    lk->shm->sh->redis_connected = 0;
    lk->ac = NULL;
    lk->connecting = 0;
    lk->connected = 0;
    lk->outstanding = 0;

    if (ac) {
        ac->onDisconnect = NULL;
        redisAsyncFree(ac);
    }
}


/*
 * A misconfigured or failing Redis fails every tick: one error line a
 * minute says so, the failures counter tells how often.
 */

static ngx_uint_t
ngx_http_kroute_redis_log_ok(ngx_http_kroute_link_t *lk)
{
    if (lk->error_logged && ngx_current_msec - lk->error_logged < 60000) {
        return 0;
    }

    lk->error_logged = ngx_current_msec ? ngx_current_msec : 1;

    return 1;
}


static void
ngx_http_kroute_redis_timeout(ngx_event_t *ev)
{
    ngx_http_kroute_link_t *lk = ev->data;

    lk->shm->sh->redis_failures++;

    ngx_http_kroute_redis_drop(lk, lk->connecting ? "connect timed out"
                                                  : "command timed out");
}


static void
ngx_http_kroute_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_kroute_link_t *lk = ac->data;

    u_char  db[NGX_INT_T_LEN + 1];

    lk->connecting = 0;

    if (lk->timeout.timer_set) {
        ngx_del_timer(&lk->timeout);
    }

    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */

        if (!lk->shm->sh->redis_down_logged) {
            ngx_log_error(NGX_LOG_ERR, lk->log, 0,
                          "kroute: cannot connect to redis: %s",
                          ac->errstr);
            lk->shm->sh->redis_down_logged = 1;
        }

        lk->shm->sh->redis_failures++;
        lk->ac = NULL;
        return;
    }

    if (lk->shm->sh->redis_down_logged) {
        ngx_log_error(NGX_LOG_NOTICE, lk->log, 0,
                      "kroute: connected to redis again");
        lk->shm->sh->redis_down_logged = 0;
    }

    lk->connected = 1;
    lk->shm->sh->redis_connected = 1;

    if (lk->conf->password.len) {
        (void) redisAsyncCommand((redisAsyncContext *) ac,
                                 ngx_http_kroute_redis_on_setup, "AUTH",
                                 "AUTH %b", lk->conf->password.data,
                                 lk->conf->password.len);
    }

    if (lk->conf->db) {
        *ngx_sprintf(db, "%i", lk->conf->db) = '\0';
        (void) redisAsyncCommand((redisAsyncContext *) ac,
                                 ngx_http_kroute_redis_on_setup, "SELECT",
                                 "SELECT %s", db);
    }

    /* batches run the script by its SHA1: load it on every connection */

    (void) redisAsyncCommand((redisAsyncContext *) ac,
                             ngx_http_kroute_redis_on_setup, "SCRIPT LOAD",
                             "SCRIPT LOAD %b", ngx_http_kroute_script,
                             sizeof(ngx_http_kroute_script) - 1);

    (void) redisAsyncCommand((redisAsyncContext *) ac,
                             ngx_http_kroute_redis_on_setup, "SADD",
                             "SADD %binstances %b",
                             lk->conf->prefix.data, lk->conf->prefix.len,
                             lk->conf->instance.data, lk->conf->instance.len);

    if (ngx_http_kroute_redis_cut(lk) == NGX_OK) {
        ngx_http_kroute_redis_send(lk);
    }
}


static void
ngx_http_kroute_redis_on_disconnect(const redisAsyncContext *ac, int status)
{
    ngx_http_kroute_link_t *lk = ac->data;

    /* hiredis frees the context after this callback */

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, lk->log, 0,
                      "kroute: redis connection lost: %s",
                      ac->errstr ? ac->errstr : "");
        lk->shm->sh->redis_failures++;
    }

    if (lk->timeout.timer_set) {
        ngx_del_timer(&lk->timeout);
    }

    lk->shm->sh->redis_connected = 0;
    lk->ac = NULL;
    lk->connecting = 0;
    lk->connected = 0;
    lk->outstanding = 0;
}


/*
 * "MOVED <slot> <ip>:<port>" from a Redis Cluster node: every key of a
 * batch has the instance's hash tag, so the node named owns them all.
 * The link reconnects there at the next tick and sends the batch again.
 */

static ngx_int_t
ngx_http_kroute_redis_moved(ngx_http_kroute_link_t *lk, redisReply *rr)
{
    u_char     *p, *last, *colon;
    size_t      len;
    ngx_int_t   port;

    if (rr->len < 6 || ngx_strncmp(rr->str, "MOVED ", 6) != 0) {
        return NGX_DECLINED;
    }

    p = (u_char *) rr->str + 6;
    last = (u_char *) rr->str + rr->len;

    p = ngx_strlchr(p, last, ' ');
    if (p == NULL) {
        return NGX_DECLINED;
    }

    p++;

    colon = NULL;

    for (last = p; last < (u_char *) rr->str + rr->len; last++) {
        if (*last == ':') {
            colon = last;
        }
    }

    if (colon == NULL) {
        return NGX_DECLINED;
    }

    len = colon - p;
    port = ngx_atoi(colon + 1, last - colon - 1);

    if (len == 0 || len >= sizeof(lk->moved_host) || port < 1
        || port > 65535 || ngx_inet_addr(p, len) == INADDR_NONE)
    {
        return NGX_DECLINED;
    }

    ngx_memcpy(lk->moved_host, p, len);
    lk->moved_host[len] = '\0';
    lk->moved_port = port;
    lk->reconnect = 1;

    ngx_log_error(NGX_LOG_NOTICE, lk->log, 0,
                  "kroute: redis batches move to %s:%ui", lk->moved_host,
                  lk->moved_port);

    return NGX_OK;
}


static void
ngx_http_kroute_redis_on_setup(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_kroute_link_t *lk = ac->data;

    redisReply  *rr = reply;

    if (rr && rr->type == REDIS_REPLY_ERROR) {

        if (rr->len > 6 && ngx_strncmp(rr->str, "MOVED ", 6) == 0
            && ngx_strcmp((char *) privdata, "SADD") == 0)
        {
            /*
             * TODO: the instances set has no hash tag; in a cluster it
             * lives on another node than the batches
             */
            ngx_log_error(NGX_LOG_INFO, lk->log, 0,
                          "kroute: redis SADD of the instance redirected: "
                          "%*s", rr->len, rr->str);
            return;
        }

        lk->shm->sh->redis_failures++;

        if (ngx_http_kroute_redis_log_ok(lk)) {
            ngx_log_error(NGX_LOG_ERR, lk->log, 0,
                          "kroute: redis %s failed: %*s", (char *) privdata,
                          rr->len, rr->str);
        }
    }
}


/*
 * Makes sure an in-flight batch exists: the one a previous attempt left
 * unacknowledged, or a new one cut from the pending deltas.  NGX_DECLINED
 * when there is nothing to send.
 */

static ngx_int_t
ngx_http_kroute_redis_cut(ngx_http_kroute_link_t *lk)
{
    u_char                        *p, *blob;
    char                          *cmd;
    size_t                        *argvlen, nkeys_len;
    uint64_t                       id;
    ngx_int_t                      rc;
    ngx_uint_t                     i, j, k, nrec, nkeys, nargs, argc, nm;
    ngx_uint_t                     count_at;
    ngx_queue_t                   *q;
    const char                   **argv, **names;
    ngx_pool_t                    *pool;
    ngx_http_kroute_delta_t       *d, **recs, **live;
    ngx_http_kroute_shctx_t       *sh;
    ngx_http_kroute_redis_conf_t  *rc_conf;
    int                            len;

    sh = lk->shm->sh;
    rc_conf = lk->conf;

    ngx_shmtx_lock(&lk->shm->shpool->mutex);
    nrec = sh->inflight ? 0 : sh->ndeltas;
    ngx_shmtx_unlock(&lk->shm->shpool->mutex);

    if (sh->inflight) {
        return NGX_OK;
    }

    if (nrec == 0) {
        return NGX_DECLINED;
    }

    pool = ngx_create_pool(16384, lk->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (lk->batch_max == 0) {
        lk->batch_max = NGX_HTTP_KROUTE_BATCH_RECORDS;
    }

    if (nrec > lk->batch_max) {
        nrec = lk->batch_max;
    }

    recs = ngx_palloc(pool, nrec * sizeof(ngx_http_kroute_delta_t *));
    live = ngx_palloc(pool, nrec * sizeof(ngx_http_kroute_delta_t *));

    /* argv: EVAL script numkeys marker keys... ttl (count pairs...)... */

    nargs = 4 + 2 * nrec + 1 + nrec * (1 + 2 * NGX_HTTP_KROUTE_NMETRICS);

    argv = ngx_palloc(pool, nargs * sizeof(char *));
    argvlen = ngx_palloc(pool, nargs * sizeof(size_t));

    if (recs == NULL || live == NULL || argv == NULL || argvlen == NULL) {
        goto done;
    }

    /*
     * Copy the records to worker memory; they stay in the zone, and go
     * on taking increments, until the batch is safely in the zone too.
     */

    ngx_shmtx_lock(&lk->shm->shpool->mutex);

    if (sh->inflight
        || (sh->cutting && ngx_current_msec - sh->cutting < 10000))
    {
        /* another worker (an old one, after a reload) is at it */
        ngx_shmtx_unlock(&lk->shm->shpool->mutex);
        rc = sh->inflight ? NGX_OK : NGX_DECLINED;
        goto done;
    }

    sh->cutting = ngx_current_msec ? ngx_current_msec : 1;
    id = ++sh->seq;

    k = 0;

    for (q = ngx_queue_head(&sh->delta_queue);
         k < nrec && q != ngx_queue_sentinel(&sh->delta_queue);
         q = ngx_queue_next(q))
    {
        d = ngx_queue_data(q, ngx_http_kroute_delta_t, queue);

        recs[k] = ngx_palloc(pool, offsetof(ngx_http_kroute_delta_t, data)
                                   + d->keylen);
        if (recs[k] == NULL) {
            break;
        }

        ngx_memcpy(recs[k], d, offsetof(ngx_http_kroute_delta_t, data)
                               + d->keylen);
        live[k] = d;
        k++;
    }

    nrec = k;

    ngx_shmtx_unlock(&lk->shm->shpool->mutex);

    if (nrec == 0) {
        rc = NGX_DECLINED;
        goto cut_done;
    }

    /*
     * Records come out in insertion order; the keys are the distinct
     * (kind, bucket) pairs, a handful per batch.
     */

    argc = 0;

    argv[argc] = "EVALSHA";
    argvlen[argc++] = 7;
    argv[argc] = (char *) lk->sha;
    argvlen[argc++] = 40;

    argc++;     /* numkeys, set below */
    nkeys = 0;

    p = ngx_pnalloc(pool, rc_conf->prefix.len + rc_conf->instance.len + 64);
    if (p == NULL) {
        goto done;
    }

    argv[argc] = (char *) p;
    argvlen[argc++] = ngx_sprintf(p, "%V{%V}:batch:%uxL:%uL",
                                  &rc_conf->prefix, &rc_conf->instance,
                                  sh->boot, id) - p;
    nkeys++;

    /* hash keys: one per distinct (kind, bucket) */

    for (i = 0; i < nrec; i++) {

        for (j = 0; j < i; j++) {
            if (recs[j]->kind == recs[i]->kind
                && recs[j]->bucket == recs[i]->bucket)
            {
                break;
            }
        }

        if (j < i) {
            continue;
        }

        p = ngx_pnalloc(pool, rc_conf->prefix.len + rc_conf->instance.len
                              + 32);
        if (p == NULL) {
            goto done;
        }

        argv[argc] = (char *) p;
        argvlen[argc++] = ngx_sprintf(p, "%V{%V}:%s:%uD", &rc_conf->prefix,
                                      &rc_conf->instance,
                                      ngx_http_kroute_kind_names[
                                                              recs[i]->kind],
                                      recs[i]->bucket) - p;
        nkeys++;
    }

    argv[argc] = "604800";
    argvlen[argc++] = 6;

    /* fields of each key in the order the keys were listed */

    for (i = 0; i < nrec; i++) {

        for (j = 0; j < i; j++) {
            if (recs[j]->kind == recs[i]->kind
                && recs[j]->bucket == recs[i]->bucket)
            {
                break;
            }
        }

        if (j < i) {
            continue;
        }

        count_at = argc++;
        len = 0;

        for (j = i; j < nrec; j++) {

            d = recs[j];

            if (d->kind != recs[i]->kind || d->bucket != recs[i]->bucket) {
                continue;
            }

            if (d->kind == NGX_HTTP_KROUTE_KIND_HOUR) {
                names = ngx_http_kroute_metric_names;
                nm = NGX_HTTP_KROUTE_NMETRICS;

            } else {
                names = ngx_http_kroute_user_metric_names;
                nm = 4;
            }

            for (k = 0; k < nm; k++) {
                if (d->value[k] == 0) {
                    continue;
                }

                p = ngx_pnalloc(pool, d->keylen + 16 + NGX_INT64_LEN);
                if (p == NULL) {
                    goto done;
                }

                argv[argc] = (char *) p;
                p = ngx_cpymem(p, d->data, d->keylen);
                p = ngx_sprintf(p, "|%s", names[k]);
                argvlen[argc] = p - (u_char *) argv[argc];
                argc++;

                argv[argc] = (char *) p;
                argvlen[argc++] = ngx_sprintf(p, "%uL", d->value[k]) - p;

                len++;
            }
        }

        p = ngx_pnalloc(pool, NGX_INT_T_LEN);
        if (p == NULL) {
            goto done;
        }

        argv[count_at] = (char *) p;
        argvlen[count_at] = ngx_sprintf(p, "%d", len) - p;
    }

    p = ngx_pnalloc(pool, NGX_INT_T_LEN);
    if (p == NULL) {
        goto done;
    }

    argv[2] = (char *) p;
    nkeys_len = ngx_sprintf(p, "%ui", nkeys) - p;
    argvlen[2] = nkeys_len;

    len = redisFormatCommandArgv(&cmd, (int) argc, argv, argvlen);
    if (len < 0) {
        ngx_log_error(NGX_LOG_ALERT, lk->log, 0,
                      "kroute: redisFormatCommandArgv() failed");
        goto cut_done;
    }

    /*
     * The batch lives in the zone until Redis acknowledges it; what it
     * carries leaves the deltas only once it is there.
     */

    ngx_shmtx_lock(&lk->shm->shpool->mutex);

    blob = ((size_t) len <= sh->batch_size) ? sh->batch_buf : NULL;

    if (blob) {
        ngx_memcpy(blob, cmd, len);
        sh->inflight = blob;
        sh->inflight_len = len;
        sh->inflight_id = id;
        sh->inflight_records = nrec;

        for (i = 0; i < nrec; i++) {
            d = live[i];
            nm = 0;

            for (k = 0; k < NGX_HTTP_KROUTE_NMETRICS; k++) {
                d->value[k] -= recs[i]->value[k];
                nm |= (d->value[k] != 0);
            }

            if (nm == 0) {
                ngx_queue_remove(&d->queue);
                ngx_rbtree_delete(&sh->deltas, &d->node);
                ngx_slab_free_locked(lk->shm->shpool, d);
                sh->ndeltas--;
            }
        }

        if (lk->batch_max < NGX_HTTP_KROUTE_BATCH_RECORDS) {
            lk->batch_max *= 2;
        }

    } else if (lk->batch_max > 1) {
        /* smaller batches until one fits the batch buffer */
        lk->batch_max = ngx_min(lk->batch_max, nrec) / 2;

    } else if (ngx_current_msec - lk->nomem_logged > 60000
               || lk->nomem_logged == 0)
    {
        lk->nomem_logged = ngx_current_msec;
        ngx_log_error(NGX_LOG_WARN, lk->log, 0,
                      "a single Redis delta does not fit the batch "
                      "buffer, %ui deltas wait; enlarge kroute_zone",
                      sh->ndeltas);
    }

    sh->cutting = 0;

    ngx_shmtx_unlock(&lk->shm->shpool->mutex);

    redisFreeCommand(cmd);

    rc = blob ? NGX_OK : NGX_DECLINED;

    goto done;

cut_done:

    ngx_shmtx_lock(&lk->shm->shpool->mutex);
    sh->cutting = 0;
    ngx_shmtx_unlock(&lk->shm->shpool->mutex);

done:

    ngx_destroy_pool(pool);

    return rc;
}


static void
ngx_http_kroute_redis_send(ngx_http_kroute_link_t *lk)
{
    ngx_http_kroute_shctx_t  *sh;

    sh = lk->shm->sh;

    if (sh->inflight == NULL || lk->ac == NULL) {
        return;
    }

    lk->sent_id = sh->inflight_id;

    if (redisAsyncFormattedCommand(lk->ac, ngx_http_kroute_redis_on_reply,
                                   NULL, (const char *) sh->inflight,
                                   sh->inflight_len)
        != REDIS_OK)
    {
        lk->shm->sh->redis_failures++;
        return;
    }

    lk->outstanding = 1;

    ngx_add_timer(&lk->timeout, lk->conf->timeout);
}


static void
ngx_http_kroute_redis_on_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    ngx_http_kroute_link_t *lk = ac->data;

    redisReply               *rr = reply;
    ngx_http_kroute_shctx_t  *sh;

    if (lk == NULL) {
        return;
    }

    sh = lk->shm->sh;

    if (lk->timeout.timer_set) {
        ngx_del_timer(&lk->timeout);
    }

    lk->outstanding = 0;

    if (rr == NULL) {
        /* the connection went away; the batch is sent again later */
        return;
    }

    if (rr->type == REDIS_REPLY_ERROR
        && ngx_http_kroute_redis_moved(lk, rr) == NGX_OK)
    {
        /* a cluster node that does not own the slot: follow it */
        return;
    }

    if (rr->type != REDIS_REPLY_INTEGER) {
        sh->redis_failures++;

        if (rr->type == REDIS_REPLY_ERROR && rr->len >= 8
            && ngx_strncmp(rr->str, "NOSCRIPT", 8) == 0)
        {
            /* flushed scripts: a new connection loads it again */
            lk->reconnect = 1;
        }

        if (ngx_http_kroute_redis_log_ok(lk)) {
            ngx_log_error(NGX_LOG_ERR, lk->log, 0,
                          "kroute: redis refused a batch: %*s",
                          rr->type == REDIS_REPLY_ERROR ? rr->len : 0,
                          rr->str);
        }

        return;
    }

    ngx_shmtx_lock(&lk->shm->shpool->mutex);

    if (sh->inflight && sh->inflight_id == lk->sent_id) {
        sh->inflight = NULL;
        sh->inflight_len = 0;
        sh->redis_batches++;

        if (rr->integer == 0) {
            sh->redis_duplicates++;
        }

        lk->error_logged = 0;
    }

    ngx_shmtx_unlock(&lk->shm->shpool->mutex);

    /* more waiting: go on without waiting for the next tick */

    if (sh->ndeltas >= NGX_HTTP_KROUTE_BATCH_RECORDS
        && ngx_http_kroute_redis_cut(lk) == NGX_OK)
    {
        ngx_http_kroute_redis_send(lk);
    }
}


static void
ngx_http_kroute_ev_add_read(void *privdata)
{
    ngx_connection_t *c = privdata;

    if (!c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_kroute_ev_del_read(void *privdata)
{
    ngx_connection_t *c = privdata;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_kroute_ev_add_write(void *privdata)
{
    ngx_connection_t *c = privdata;

    if (!c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_kroute_ev_del_write(void *privdata)
{
    ngx_connection_t *c = privdata;

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/*
 * hiredis calls this before it closes the socket itself: the nginx
 * connection gives the descriptor back without closing it.
 */

static void
ngx_http_kroute_ev_cleanup(void *privdata)
{
    ngx_connection_t *c = privdata;

    ngx_http_kroute_link_t  *lk;

    lk = c->data;

    ngx_http_kroute_ev_del_read(c);
    ngx_http_kroute_ev_del_write(c);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);

    if (lk->c == c) {
        lk->c = NULL;
    }
}


static void
ngx_http_kroute_redis_read(ngx_event_t *ev)
{
    ngx_connection_t        *c;
    ngx_http_kroute_link_t  *lk;

    c = ev->data;
    lk = c->data;

    if (lk->ac) {
        redisAsyncHandleRead(lk->ac);
    }
}


static void
ngx_http_kroute_redis_write(ngx_event_t *ev)
{
    ngx_connection_t        *c;
    ngx_http_kroute_link_t  *lk;

    c = ev->data;
    lk = c->data;

    if (lk->ac) {
        redisAsyncHandleWrite(lk->ac);
    }
}
