#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Metering to Redis: the hour, user-day and user-feature-day hashes hold
# exactly the sums of what went through the gateway, while Redis is
# paused, killed and restarted empty, refusing writes, or losing the
# reply to a batch it applied; nginx keeps answering at normal speed all
# along, counts wait in the zone (bounded, drops counted and logged once
# a minute) and are delivered once.  Two gateways share one Redis, a
# reload keeps the batch in flight, and bad kroute_redis values fail
# nginx -t.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;
use Kroute::RedisServer qw(wait_for hfield);

require_module();

plan skip_all => 'redis-server not installed'
    unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};

my $started = time;

my $scratch = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $scratch->testdir);

# Prices of the catalog below in pico-USD per token (= micro-USD per 1M
# tokens): input, cached, cache write, output.

my %price = (
    'gpt-5-nano'        => [2_000_000, 1_000_000, 2_000_000, 8_000_000],
    'gpt-5.6-sol'       => [5_000_000, 1_000_000, 7_000_000, 20_000_000],
    'gpt-4o'            => [2_500_000, 2_500_000, 2_500_000, 10_000_000],
    'claude-3-opus'     => [15_000_000, 15_000_000, 15_000_000, 75_000_000],
    'claude-sonnet-4-5' => [3_000_000, 1_000_000, 4_000_000, 15_000_000],
);

my %provider = (
    'gpt-5-nano' => 'openai', 'gpt-5.6-sol' => 'openai',
    'gpt-4o' => 'openai', 'claude-3-opus' => 'anthropic',
    'claude-sonnet-4-5' => 'anthropic',
);

sub cost_pusd {
    my ($model, $p, $c, $cached, $cw) = @_;
    my ($in, $cin, $cwin, $out) = @{ $price{$model} };
    return ($p - $cached - $cw) * $in + $cached * $cin + $cw * $cwin
           + $c * $out;
}

# hand-computed: 8 * 2 + 377 * 8 = 3032 micro-USD; (4020 - 4012) * 5
# + 4012 * 7 + 4 * 20 = 28204; 149 * 2.5 + 60 * 10 = 972.5

is(cost_pusd('gpt-5-nano', 8, 377, 0, 0), 3_032_000_000, 'cost check');
is(cost_pusd('gpt-5.6-sol', 4020, 4, 0, 4012), 28_204_000_000,
   'cost check cache write');
is(cost_pusd('gpt-4o', 149, 60, 0, 0), 972_500_000, 'cost check fraction');

# recorded replies with known usage: fixture, model, P, C, cached,
# cache_write, reasoning

my @cases = (
    ['openai-chat-resp-plain-reasoning-model.json', 'gpt-5-nano',
     8, 377, 0, 0, 320],
    ['openai-chat-resp-multiturn.json', 'gpt-5-nano', 50, 526, 0, 0, 512],
    ['openai-chat-resp-cache-write-4012.json', 'gpt-5.6-sol',
     4020, 4, 0, 4012, 0],
    ['openai-chat-resp-cache-read-4012.json', 'gpt-5.6-sol',
     4020, 4, 4012, 0, 0],
    ['openai-chat-sse-include-usage-reasoning.sse', 'gpt-5-nano',
     12, 100, 0, 0, 100],
    ['openai-chat-sse-tool-calls-two-tools.sse', 'gpt-4o', 149, 60, 0, 0, 0],
    ['anthropic-messages-sse-basic.sse', 'claude-3-opus', 11, 6, 0, 0, 0],
    ['anthropic-messages-resp-cache-read-1111.json', 'claude-sonnet-4-5',
     1114, 406, 1111, 0, 0],
);

my @features = ('chat', 'search');

my $HTTP = <<'EOF';
    %%LOG_FORMAT%%

    kroute_zone kroute:%%ZONE%%;
    %%REDIS%%

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;
    kroute_provider anthropic url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/anthropic.key format=anthropic;

    kroute_model gpt-5-nano provider=openai input=2 output=8 cached=1
                 alias=gpt-5-nano-2025-08-07;
    kroute_model gpt-5.6-sol provider=openai input=5 output=20 cached=1
                 cache_write=7;
    kroute_model gpt-4o provider=openai input=2.5 output=10
                 alias=gpt-4o-2024-08-06;
    kroute_model claude-3-opus provider=anthropic input=15 output=75
                 alias=claude-3-opus-latest;
    kroute_model claude-sonnet-4-5 provider=anthropic input=3 output=15
                 cached=1 cache_write=4 alias=claude-sonnet-4-5-20250929;

    kroute_feature $http_x_feature;
    kroute_cohort $http_x_cohort;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /v1/chat/completions {
            kroute on;
            proxy_pass $kroute_upstream;
            proxy_set_header Authorization $kroute_authorization;
            proxy_set_header Host $kroute_upstream_host;
            proxy_http_version 1.1;
            proxy_buffering off;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location /v1/messages {
            kroute on;
            kroute_format anthropic;
            proxy_pass $kroute_upstream;
            proxy_set_header Authorization "";
            proxy_set_header x-api-key $kroute_api_key;
            proxy_set_header Host $kroute_upstream_host;
            proxy_http_version 1.1;
            proxy_buffering off;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location /metrics {
            kroute_metrics;
        }
    }
EOF


# a gateway writing to Redis at $addr as instance $inst

sub gateway {
    my (%o) = @_;
    my $t = Kroute::Test->new;
    $t->write_file('openai.key', "sk-test-openai-redis\n");
    $t->write_file('anthropic.key', "sk-ant-test-redis\n");
    $t->set(MOCK_PORT => $mock->port, LOG_FORMAT => log_format('kroute'),
            ZONE => $o{zone} || '1m', REDIS => redis_line(%o));
    $t->run($HTTP);
    return $t;
}


sub redis_line {
    my (%o) = @_;
    return "kroute_redis $o{addr} instance=$o{inst}"
        . " interval=$o{interval} timeout=$o{timeout};"
        if $o{interval};
    return "kroute_redis $o{addr} instance=$o{inst}"
        . ($o{password_file} ? " password_file=$o{password_file}" : '')
        . ' interval=200ms timeout=500ms;';
}


# sends $n requests, cycling through the cases, two features, five users
# and two cohorts; returns what was sent

my $seq = 0;

sub wave {
    my ($t, $n, %o) = @_;
    my @sent;
    for my $i (1 .. $n) {
        my $k = $seq++;
        my $case = $cases[$k % @cases];
        my ($file, $model) = @$case;
        my $sse = $file =~ /\.sse$/;
        my $anthropic = $file =~ /^anthropic-/;
        my $user = $o{user} ? $o{user}->($k) : 'user-' . ($k % 5);
        my $feature = $features[int($k / 3) % 2];
        my $tid = "r$k";

        my $body = { model => $model, user => $user,
                     messages => [ { role => 'user',
                                     content => "Say hello, number $k." } ] };
        $body->{max_tokens} = 1024 if $anthropic;
        $body->{stream} = JSON::PP::true() if $sse;

        my $t0 = time;
        my $r = $t->post($anthropic ? '/v1/messages' : '/v1/chat/completions',
                         $body, timeout => 10, headers => [
                             'X-Test-Id' => $tid,
                             'X-Mock-Reply' => $file,
                             'X-Feature' => $feature,
                             'X-Cohort' => ($k % 2 ? 'beta' : ''),
                         ]);
        push @sent, { tid => $tid, case => $case, user => $user,
                      feature => $feature, status => $r->{status} || 0,
                      elapsed => time - $t0, t => $t };
    }
    return @sent;
}


sub all_ok {
    my ($name, $bound, @sent) = @_;
    my @bad = grep { $_->{status} != 200 } @sent;
    ok(!@bad, "$name: all " . @sent . " requests answered 200")
        or diag(join ', ', map { "$_->{tid}: $_->{status}" } @bad);
    return unless $bound;
    my @slow = grep { $_->{elapsed} > $bound } @sent;
    ok(!@slow, "$name: every request completed within ${bound}s")
        or diag(join ', ', map { sprintf '%s: %.2fs', $_->{tid},
                                 $_->{elapsed} } @slow);
}


# what the three hashes must hold for the requests sent: dimensions of
# the hour hash from the access log line of each request (task is the
# classifier's), metrics from the fixture table

sub expected {
    my (@sent) = @_;
    my %e = (h => {}, ud => {}, ufd => {});
    for my $s (@sent) {
        my ($file, $model, $p, $c, $cached, $cw, $reason) = @{ $s->{case} };
        my $l = $s->{t}->log_for($s->{tid}) || {};
        my @dims = ($s->{feature}, $l->{task} // '?', $model,
                    $provider{$model}, $l->{cohort} // '', '');
        my $cost = cost_pusd($model, $p, $c, $cached, $cw);

        my %m = (req => 1, in => $p, out => $c, cached => $cached,
                 cw => $cw, reason => $reason, cost_pusd => $cost);
        for (keys %m) {
            $e{h}{ hfield(\@dims, $_) } += $m{$_} if $m{$_};
        }
        for (qw(req in out cost_pusd)) {
            next unless $m{$_};
            $e{ud}{"$s->{user}|$_"} += $m{$_};
            $e{ufd}{"$s->{user}\x1f$s->{feature}|$_"} += $m{$_};
        }
        $e{model_mismatch}++ if ($l->{model} // '') ne $model;
        $e{lat_ms} += $l->{latency_ms} || 0;
    }
    return \%e;
}


# the sums over every hour / day key of an instance (a run may cross an
# hour); lat_ms and ttft_ms are summed apart since their values vary

sub totals {
    my ($redis, $inst, $prefix) = @_;
    $prefix //= 'kroute:';
    my %t = (h => {}, ud => {}, ufd => {}, lat_ms => 0);
    for my $kind (qw(h ud ufd)) {
        my $keys = $redis->cmd('KEYS', "$prefix\{$inst\}:$kind:*") || [];
        for my $key (@$keys) {
            my $h = $redis->hgetall($key);
            while (my ($f, $v) = each %$h) {
                if ($f =~ /\|(?:lat_ms|ttft_ms)$/) {
                    $t{lat_ms} += $v if $f =~ /\|lat_ms$/;
                    next;
                }
                $t{$kind}{$f} += $v;
            }
        }
    }
    return \%t;
}


sub metrics_of {
    my ($t) = @_;
    my $text = $t->metrics('/metrics');
    return parse_metrics($text);
}


sub metric {
    my ($t, $name) = @_;
    my $m = metrics_of($t);
    return $m->{$name};
}


# waits until Redis holds exactly the expected sums and nothing is
# pending, then once more after a few flush intervals (nothing counted
# twice late); checks every hash

sub check_totals {
    my ($name, $redis, $inst, $exp, @gw) = @_;
    my $got;
    my $same = sub {
        $got = eval { totals($redis, $inst) } or return 0;
        for my $k (qw(h ud ufd)) {
            return 0 unless join(',', map { "$_=$got->{$k}{$_}" }
                                      sort keys %{ $got->{$k} })
                         eq join(',', map { "$_=$exp->{$k}{$_}" }
                                      sort keys %{ $exp->{$k} });
        }
        for my $t (@gw) {
            return 0 unless (metric($t, 'kroute_redis_pending_deltas') // 1)
                            == 0;
        }
        return 1;
    };
    wait_for($same, 10);
    sleep 0.6;
    $got = totals($redis, $inst);

    ok(!$exp->{model_mismatch}, "$name: every request routed to its model");
    is_deeply($got->{h}, $exp->{h}, "$name: hour hash sums exact");
    is_deeply($got->{ud}, $exp->{ud}, "$name: user-day sums exact");
    is_deeply($got->{ufd}, $exp->{ufd}, "$name: user-feature-day sums exact");
    is($got->{lat_ms}, $exp->{lat_ms},
       "$name: lat_ms sums the access log latencies");
    for my $t (@gw) {
        is(metric($t, 'kroute_redis_pending_deltas'), 0,
           "$name: nothing pending");
    }
    return $got;
}


sub sum_of {
    my ($h, $metric) = @_;
    my $s = 0;
    $s += $h->{$_} for grep { /\|\Q$metric\E$/ } keys %$h;
    return $s;
}


# ---- 1. baseline ---------------------------------------------------------

my $redis = Kroute::RedisServer->start;

{
    my $t = gateway(addr => $redis->addr, inst => 'base');
    my @sent = wave($t, 40);
    all_ok('baseline', 0, @sent);
    my $exp = expected(@sent);

    # the case table, summed by hand: 5 rounds of the 8 cases
    is(sum_of($exp->{h}, 'req'), 40, 'baseline: 40 requests expected');
    is(sum_of($exp->{h}, 'in'),
       5 * (8 + 50 + 4020 + 4020 + 12 + 149 + 11 + 1114),
       'baseline: input tokens expected');

    my $got = check_totals('baseline', $redis, 'base', $exp, $t);
    is(sum_of($got->{h}, 'cost_pusd'),
       5 * (3_032_000_000 + cost_pusd('gpt-5-nano', 50, 526, 0, 0)
            + 28_204_000_000 + cost_pusd('gpt-5.6-sol', 4020, 4, 4012, 0)
            + cost_pusd('gpt-5-nano', 12, 100, 0, 0) + 972_500_000
            + cost_pusd('claude-3-opus', 11, 6, 0, 0)
            + cost_pusd('claude-sonnet-4-5', 1114, 406, 1111, 0)),
       'baseline: cost sum exact');
    is(scalar(grep { /\|req$/ } keys %{ $got->{ud} }), 5,
       'baseline: five users');

    my $members = $redis->cmd('SMEMBERS', 'kroute:instances') || [];
    ok((grep { $_ eq 'base' } @$members), 'baseline: instance registered');

    my $m = metrics_of($t);
    is($m->{kroute_redis_connected}, 1, 'baseline: connected gauge');
    cmp_ok($m->{kroute_redis_batches_total}, '>', 0, 'baseline: batches');
    is($m->{kroute_redis_failures_total}, 0, 'baseline: no failures');
    is($m->{kroute_redis_dropped_total}, 0, 'baseline: no drops');

    my @markers = @{ $redis->cmd('KEYS', 'kroute:{base}:batch:*') || [] };
    is(scalar @markers, $m->{kroute_redis_batches_total},
       'baseline: one marker per batch');
    my $ttl = @markers ? $redis->cmd('TTL', $markers[0]) : 0;
    ok($ttl > 604000 && $ttl <= 604800, "baseline: marker ttl $ttl");

    $t->check_error_log(no_error => 1, name => 'baseline: clean error log');
}


# ---- 2. Redis paused with SIGSTOP ----------------------------------------

{
    my $t = gateway(addr => $redis->addr, inst => 'paused');
    my @sent = wave($t, 8);
    wait_for(sub { !metric($t, 'kroute_redis_pending_deltas') }, 5);

    $redis->pause;
    push @sent, wave($t, 40);
    all_ok('paused redis', 2, @sent);
    sleep 1.5;    # a few command timeouts and reconnects

    my $m = metrics_of($t);
    cmp_ok($m->{kroute_redis_pending_deltas}, '>', 0,
           'paused redis: deltas pending');
    cmp_ok($m->{kroute_redis_failures_total}, '>', 0,
           'paused redis: timeouts counted');
    push @sent, wave($t, 8);
    all_ok('paused redis, later', 2, @sent[-8 .. -1]);

    $redis->resume;
    check_totals('paused redis', $redis, 'paused', expected(@sent), $t);
    my $m2 = metrics_of($t);
    my $markers = $redis->cmd('KEYS', 'kroute:{paused}:batch:*') || [];
    is(scalar @$markers, $m2->{kroute_redis_batches_total},
       'paused redis: one marker per acknowledged batch ('
       . "$m2->{kroute_redis_duplicate_batches_total} acknowledged as "
       . 'already applied)');
    like($t->error_log, qr/\[error\].*kroute: redis command timed out/,
         'paused redis: timeout logged');

    $t->check_error_log(name => 'paused redis: no alert');
}


# ---- 3. Redis killed and restarted empty ---------------------------------

{
    my $r3 = Kroute::RedisServer->start;
    my $t = gateway(addr => $r3->addr, inst => 'killed');
    my @first = wave($t, 16);
    check_totals('before kill', $r3, 'killed', expected(@first), $t);
    my $fail0 = metric($t, 'kroute_redis_failures_total');

    $r3->kill_hard;
    my @second = wave($t, 24);
    all_ok('redis killed', 2, @second);
    sleep 0.6;
    cmp_ok(metric($t, 'kroute_redis_pending_deltas'), '>', 0,
           'redis killed: second wave pending');
    is(metric($t, 'kroute_redis_connected'), 0,
       'redis killed: connected gauge 0');

    $r3->restart;
    check_totals('restarted redis', $r3, 'killed', expected(@second), $t);
    cmp_ok(metric($t, 'kroute_redis_failures_total'), '>', $fail0,
           'redis killed: failures counted');
    is(metric($t, 'kroute_redis_connected'), 1,
       'restarted redis: connected again');
    my $members = $r3->cmd('SMEMBERS', 'kroute:instances') || [];
    ok((grep { $_ eq 'killed' } @$members),
       'restarted redis: instance registered again');

    my $log = $t->error_log;
    like($log, qr/\[error\].*kroute: (?:redis connection lost|cannot connect)/,
         'redis killed: loss logged');
    like($log, qr/\[notice\].*connected to redis again/,
         'restarted redis: reconnect logged');
    $t->check_error_log(name => 'redis killed: no alert');
    $r3->stop;
}


# ---- 4. the reply to an applied batch is lost ----------------------------

{
    my $proxy = Kroute::RedisServer->proxy(to => $redis->port,
                                           drop_eval_replies => 2);
    my $t = gateway(addr => '127.0.0.1:' . $proxy->port, inst => 'lost');
    my @sent = wave($t, 12);
    wait_for(sub { $proxy->dropped >= 1 }, 5);
    push @sent, wave($t, 12);
    all_ok('lost replies', 2, @sent);

    check_totals('lost replies', $redis, 'lost', expected(@sent), $t);
    is($proxy->dropped, 2, 'lost replies: two EVAL replies lost');
    my $m = metrics_of($t);
    cmp_ok($m->{kroute_redis_duplicate_batches_total}, '>', 0,
           'lost replies: resent batch recognised');
    my $markers = $redis->cmd('KEYS', 'kroute:{lost}:batch:*') || [];
    is(scalar @$markers, $m->{kroute_redis_batches_total},
       'lost replies: one marker per acknowledged batch');
    cmp_ok($m->{kroute_redis_failures_total}, '>', 0,
           'lost replies: lost connections counted');
    $t->check_error_log(name => 'lost replies: no alert');
    $proxy->stop;
}


# ---- 5. Redis refusing writes --------------------------------------------

{
    my $r5 = Kroute::RedisServer->start;
    my $t = gateway(addr => $r5->addr, inst => 'refused');
    my @sent = wave($t, 8);
    check_totals('before refusal', $r5, 'refused', expected(@sent), $t);
    my $fail0 = metric($t, 'kroute_redis_failures_total');

    $r5->cmd('CONFIG', 'SET', 'min-replicas-to-write', '1');
    my @more = wave($t, 16);
    all_ok('refusing redis', 2, @more);
    wait_for(sub {
        metric($t, 'kroute_redis_failures_total') > $fail0 + 1
    }, 5);
    cmp_ok(metric($t, 'kroute_redis_failures_total'), '>', $fail0 + 1,
           'refusing redis: failures counted');
    cmp_ok(metric($t, 'kroute_redis_pending_deltas'), '>', 0,
           'refusing redis: deltas kept');
    is(sum_of(totals($r5, 'refused')->{h}, 'req'), 8,
       'refusing redis: nothing applied meanwhile');
    like($t->error_log, qr/\[error\].*redis refused a batch: NOREPLICAS/,
         'refusing redis: refusal logged with the reason');

    $r5->cmd('CONFIG', 'SET', 'min-replicas-to-write', '0');
    check_totals('redis writable again', $r5, 'refused',
                 expected(@sent, @more), $t);
    $t->check_error_log(name => 'refusing redis: no alert');
    $r5->stop;
}


# ---- 5b. a password -------------------------------------------------------

{
    my $r5 = Kroute::RedisServer->start(password => 'kr-s3cret');
    my $pw = $scratch->write_file('redis.pass', "kr-s3cret\n");
    my $t = gateway(addr => $r5->addr, inst => 'auth', password_file => $pw);
    my @sent = wave($t, 12);
    all_ok('password', 0, @sent);
    check_totals('password', $r5, 'auth', expected(@sent), $t);
    $t->check_error_log(no_error => 1, name => 'password: clean log');

    $pw = $scratch->write_file('redis-bad.pass', "not-the-password\n");
    my $bad = gateway(addr => $r5->addr, inst => 'auth-bad',
                      password_file => $pw);
    my @more = wave($bad, 8);
    all_ok('wrong password', 2, @more);
    wait_for(sub { metric($bad, 'kroute_redis_failures_total') >= 2 }, 5);
    cmp_ok(metric($bad, 'kroute_redis_failures_total'), '>=', 2,
           'wrong password: failures counted');
    cmp_ok(metric($bad, 'kroute_redis_pending_deltas'), '>', 0,
           'wrong password: deltas kept');
    my $log = $bad->error_log;
    like($log, qr/\[error\].*kroute: redis AUTH failed: WRONGPASS/,
         'wrong password: AUTH failure logged');
    unlike($log, qr/not-the-password/, 'wrong password: password not logged');
    is_deeply($r5->cmd('KEYS', 'kroute:{auth-bad}:*'), [],
              'wrong password: nothing written');
    $bad->check_error_log(name => 'wrong password: no alert');
    $r5->stop;
}


# ---- 6. a full zone while Redis is down ----------------------------------

{
    my $down = Kroute::RedisServer::free_port();
    my $t = gateway(addr => "127.0.0.1:$down", inst => 'full',
                    zone => '32k');
    my @sent = wave($t, 150, user => sub { "many-$_[0]" });
    all_ok('full zone', 2, @sent);

    my $m = metrics_of($t);
    cmp_ok($m->{kroute_redis_dropped_total} // 0, '>', 0,
           'full zone: drops counted');
    cmp_ok($m->{kroute_redis_pending_deltas} // 0, '>', 0,
           'full zone: deltas kept');
    my @warn = grep { /dropped so far/ } split /\n/, $t->error_log;
    is(scalar @warn, 1, 'full zone: the drop is logged once a minute')
        or diag(join "\n", @warn[0 .. ($#warn < 4 ? $#warn : 4)]);
    like($warn[0] // '', qr/\[warn\]/, 'full zone: at warn level');

    # Redis comes up: what was kept is delivered, nothing more is lost;
    # the last requests are counted just after their replies went out
    select(undef, undef, undef, 0.5);
    $m = metrics_of($t);
    my $kept = $m->{kroute_redis_pending_deltas} // 0;
    my $dropped = $m->{kroute_redis_dropped_total} // 0;
    my $r6 = Kroute::RedisServer->start(port => $down);
    wait_for(sub { (metric($t, 'kroute_redis_pending_deltas') // 1) == 0 },
             10);
    is(metric($t, 'kroute_redis_pending_deltas'), 0,
       'full zone: nothing pending once redis is back');

    {
        is(metric($t, 'kroute_redis_dropped_total'), $dropped,
           'full zone: no kept delta dropped on delivery');
        my $got = totals($r6, 'full');
        cmp_ok(sum_of($got->{ud}, 'req') + sum_of($got->{ufd}, 'req')
               + sum_of($got->{h}, 'req'), '>', 0,
               "full zone: the $kept kept deltas reach redis");
        my @lost = grep { /does not fit the batch buffer/ }
                   split /\n/, $t->error_log;
        ok(!@lost, 'full zone: no batch dropped for want of room')
            or diag(join "\n", @lost);
    }
    $t->check_error_log(name => 'full zone: no alert');
    $r6->stop;
}


# ---- 7. two gateways, one Redis ------------------------------------------

{
    my $ta = gateway(addr => $redis->addr, inst => 'gw-a');
    my $tb = gateway(addr => $redis->addr, inst => 'gw-b');
    my @a = wave($ta, 12);
    my @b = wave($tb, 12);
    push @a, wave($ta, 6);

    my $ea = expected(@a);
    my $eb = expected(@b);
    my $ga = check_totals('gateway a', $redis, 'gw-a', $ea, $ta);
    my $gb = check_totals('gateway b', $redis, 'gw-b', $eb, $tb);
    is(sum_of($ga->{h}, 'req') + sum_of($gb->{h}, 'req'), 30,
       'two gateways: 30 requests in all');
    is(sum_of($ga->{h}, 'cost_pusd') + sum_of($gb->{h}, 'cost_pusd'),
       sum_of($ea->{h}, 'cost_pusd') + sum_of($eb->{h}, 'cost_pusd'),
       'two gateways: cost in all');
    my %members = map { $_ => 1 }
                  @{ $redis->cmd('SMEMBERS', 'kroute:instances') || [] };
    ok($members{'gw-a'} && $members{'gw-b'}, 'two gateways: both registered');
    $ta->check_error_log(no_error => 1, name => 'gateway a: clean log');
    $tb->check_error_log(no_error => 1, name => 'gateway b: clean log');
}


# ---- 8. reload during traffic with a batch in flight ---------------------

{
    my $t = gateway(addr => $redis->addr, inst => 'reload');
    my @sent = wave($t, 8);
    wait_for(sub { !metric($t, 'kroute_redis_pending_deltas') }, 5);

    # a batch goes out to a paused Redis, then nginx reloads while a
    # client keeps sending
    $redis->pause;
    push @sent, wave($t, 8);
    sleep 0.5;

    my $bg = "$scratch->{dir}/reload-bg";
    my $start = $seq;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my @s = wave($t, 24);
        open my $fh, '>', $bg;
        print $fh join("\n", map { "$_->{tid} $_->{status}" } @s), "\n";
        close $fh;
        POSIX::_exit(0);
    }
    $seq += 24;
    sleep 0.2;
    $t->reload;
    $redis->resume;

    my $done = wait_for(sub { waitpid($pid, WNOHANG) == $pid }, 20);
    ok($done, 'reload: background client finished');
    my %status = map { split / / } do {
        open my $fh, '<', $bg; map { chomp; $_ } <$fh>
    };
    is(scalar(grep { $_ == 200 } values %status), 24,
       'reload: background requests answered 200');

    # the same sequence of cases the child used
    for my $k ($start .. $start + 23) {
        my $case = $cases[$k % @cases];
        push @sent, { tid => "r$k", case => $case, user => 'user-' . ($k % 5),
                      feature => $features[int($k / 3) % 2], t => $t };
    }
    push @sent, wave($t, 8);
    check_totals('reload', $redis, 'reload', expected(@sent), $t);
    $t->check_error_log(name => 'reload: no alert');
}


# ---- 9. configuration errors ---------------------------------------------

my $zone = "kroute_zone kroute:1m;\n";

nginx_t_fails("${zone}kroute_redis localhost:6379;",
              qr/\[emerg\].*"localhost:6379" must be an IPv4 address/,
              'a host name is refused at emerg, quoted');
nginx_t_fails("${zone}kroute_redis 127.0.0.1;",
              qr/\[emerg\].*invalid kroute_redis parameter "127\.0\.0\.1"/,
              'an address without port is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:;",
              qr/\[emerg\].*invalid kroute_redis parameter "127\.0\.0\.1:"/,
              'an empty port is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:70000;",
              qr/\[emerg\].*invalid kroute_redis parameter "[\d.]+:70000"/,
              'a port out of range is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:6379 interval=soon;",
              qr/\[emerg\].*invalid kroute_redis parameter "interval=soon"/,
              'a bad interval is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:6379 interval=0;",
              qr/\[emerg\].*invalid kroute_redis parameter "interval=0"/,
              'a zero interval is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:6379 timeout=x;",
              qr/\[emerg\].*invalid kroute_redis parameter "timeout=x"/,
              'a bad timeout is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:6379 db=one;",
              qr/\[emerg\].*invalid kroute_redis parameter "db=one"/,
              'a bad db is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:6379 instance=a}b;",
              qr/\[emerg\].*invalid kroute_redis parameter "instance=a}b"/,
              'an instance with a brace is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:6379 "
              . "password_file=%%TESTDIR%%/none;",
              qr/\[emerg\].*"[^"]*none" failed/,
              'a missing password file is refused');
nginx_t_fails("${zone}kroute_redis 127.0.0.1:6379;\n"
              . "kroute_redis 127.0.0.1:6380;",
              qr/\[emerg\].*"kroute_redis" directive is duplicate/,
              'a second kroute_redis is refused');
nginx_t_fails("kroute_redis 127.0.0.1:6379;",
              qr/\[emerg\].*"kroute_redis" needs a "kroute_zone"/,
              'kroute_redis without kroute_zone is refused');
nginx_t_fails("${zone}server { listen 127.0.0.1:%%PORT%%;\n"
              . "location / { kroute_redis 127.0.0.1:6379; } }",
              qr/\[emerg\].*"kroute_redis" directive is not allowed here/,
              'kroute_redis outside http is refused');
nginx_t_fails("kroute_zone kroute:16k;\nkroute_redis 127.0.0.1:6379;",
              qr/\[emerg\].*kroute_zone "kroute:16k" is too small/,
              'a zone under 8 pages is refused');
nginx_ok("kroute_zone kroute:32k;\nkroute_redis 127.0.0.1:6379;",
         'a zone of 8 pages passes');
nginx_ok("${zone}kroute_redis 127.0.0.1:6379 instance=edge-1 "
         . "prefix=app: db=2 interval=250ms timeout=2s;",
         'a full kroute_redis line passes');
nginx_ok("${zone}kroute_redis unix:%%TESTDIR%%/redis.sock;",
         'a unix socket passes');


# ---- the end ---------------------------------------------------------------

ok(!grep(/crash|panic|assert/i, $redis->log_text), 'redis log clean');
$redis->stop;
$mock->stop;

my $took = time - $started;
cmp_ok($took, '<', 90, sprintf 'took %.1fs', $took);

done_testing;
