#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Metering to a Redis Cluster of three masters.  The module talks to one
# node and does not follow redirects: pointed at the node that owns the
# slot of its hash tag, the hour and user hashes hold the exact sums;
# pointed at another node, every batch is refused with MOVED, logged and
# counted while nginx keeps serving, and the waiting counts reach the
# right node after a reload that points there.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use Test::More;
use Time::HiRes qw(sleep time);

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;
use Kroute::RedisServer qw(wait_for hfield);

require_module();

plan skip_all => 'redis-server or redis-cli not installed'
    unless grep({ -x "$_/redis-server" } split /:/, $ENV{PATH})
           && grep({ -x "$_/redis-cli" } split /:/, $ENV{PATH});

my $started = time;

my @nodes = Kroute::RedisServer->cluster(n => 3);
is(scalar @nodes, 3, 'three masters up, cluster state ok');

my $scratch = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $scratch->testdir);

# input, cached, output prices in pico-USD per token

my %price = (
    'gpt-5-nano'  => [2_000_000, 1_000_000, 8_000_000],
    'gpt-5.6-sol' => [5_000_000, 1_000_000, 20_000_000],
    'gpt-4o'      => [2_500_000, 2_500_000, 10_000_000],
);

# fixture, model, P, C, cached, reasoning

my @cases = (
    ['openai-chat-resp-plain-reasoning-model.json', 'gpt-5-nano',
     8, 377, 0, 320],
    ['openai-chat-resp-cache-read-4012.json', 'gpt-5.6-sol',
     4020, 4, 4012, 0],
    ['openai-chat-sse-tool-calls-two-tools.sse', 'gpt-4o', 149, 60, 0, 0],
);

my $HTTP = <<'EOF';
    %%LOG_FORMAT%%

    kroute_zone kroute:1m;
    kroute_redis %%REDIS_ADDR%% instance=%%INSTANCE%%
                 interval=200ms timeout=500ms;

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;

    kroute_model gpt-5-nano provider=openai input=2 output=8 cached=1
                 alias=gpt-5-nano-2025-08-07;
    kroute_model gpt-5.6-sol provider=openai input=5 output=20 cached=1;
    kroute_model gpt-4o provider=openai input=2.5 output=10
                 alias=gpt-4o-2024-08-06;

    kroute_feature $http_x_feature;

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

        location /metrics {
            kroute_metrics;
        }
    }
EOF


sub keyslot {
    my ($key) = @_;
    return $nodes[0]->cmd('CLUSTER', 'KEYSLOT', $key);
}


sub owner {
    my ($key) = @_;
    return Kroute::RedisServer->slot_owner(keyslot($key), @nodes);
}


# an instance whose hash tag lives on another node than the instances
# set, which carries no tag: the registration goes astray by design of
# the test

my $set_owner = owner('kroute:instances');
my ($inst) = grep { owner("{$_}")->port != $set_owner->port }
             map { "edge-$_" } 1 .. 20;
ok($inst, "instance $inst hashes away from kroute:instances");

my $right = owner("{$inst}");
my ($wrong) = grep { $_->port != $right->port } @nodes;
diag("slot " . keyslot("{$inst}") . " of {$inst} is on " . $right->addr);


sub gateway {
    my ($addr) = @_;
    my $t = Kroute::Test->new;
    $t->write_file('openai.key', "sk-test-openai-cluster\n");
    $t->set(MOCK_PORT => $mock->port, LOG_FORMAT => log_format('kroute'),
            REDIS_ADDR => $addr, INSTANCE => $inst);
    $t->run($HTTP);
    return $t;
}


my $seq = 0;

sub wave {
    my ($t, $n) = @_;
    my @sent;
    for (1 .. $n) {
        my $k = $seq++;
        my $case = $cases[$k % @cases];
        my ($file, $model) = @$case;
        my $body = { model => $model, user => 'u' . ($k % 3),
                     messages => [ { role => 'user',
                                     content => "Say hello, number $k." } ] };
        $body->{stream} = JSON::PP::true() if $file =~ /\.sse$/;
        my $t0 = time;
        my $r = $t->post('/v1/chat/completions', $body, timeout => 10,
                         headers => [ 'X-Test-Id' => "c$k",
                                      'X-Mock-Reply' => $file,
                                      'X-Feature' => $k % 2 ? 'a' : 'b' ]);
        push @sent, { tid => "c$k", case => $case, user => 'u' . ($k % 3),
                      feature => $k % 2 ? 'a' : 'b',
                      status => $r->{status} || 0, elapsed => time - $t0,
                      t => $t };
    }
    return @sent;
}


sub expected {
    my (@sent) = @_;
    my %e = (h => {}, ud => {});
    for my $s (@sent) {
        my ($file, $model, $p, $c, $cached, $reason) = @{ $s->{case} };
        my ($in, $cin, $out) = @{ $price{$model} };
        my $l = $s->{t}->log_for($s->{tid}) || {};
        my @dims = ($s->{feature}, $l->{task} // '?', $model, 'openai', '',
                    '');
        my %m = (req => 1, in => $p, out => $c, cached => $cached,
                 reason => $reason,
                 cost_pusd => ($p - $cached) * $in + $cached * $cin
                              + $c * $out);
        for (keys %m) {
            $e{h}{ hfield(\@dims, $_) } += $m{$_} if $m{$_};
        }
        for (qw(req in out cost_pusd)) {
            $e{ud}{"$s->{user}|$_"} += $m{$_} if $m{$_};
        }
    }
    return \%e;
}


sub totals {
    my ($node) = @_;
    my %t = (h => {}, ud => {});
    for my $kind (qw(h ud)) {
        for my $key (@{ $node->cmd('KEYS', "kroute:{$inst}:$kind:*") || [] })
        {
            my $h = $node->hgetall($key);
            while (my ($f, $v) = each %$h) {
                next if $f =~ /\|(?:lat_ms|ttft_ms)$/;
                $t{$kind}{$f} += $v;
            }
        }
    }
    return \%t;
}


sub metric {
    my ($t, $name) = @_;
    return parse_metrics($t->metrics('/metrics'))->{$name};
}


sub flat {
    my ($h) = @_;
    return join ',', map { "$_=$h->{$_}" } sort keys %$h;
}


sub check_totals {
    my ($name, $t, @sent) = @_;
    my $exp = expected(@sent);
    wait_for(sub {
        my $got = eval { totals($right) } or return 0;
        return flat($got->{h}) eq flat($exp->{h})
               && flat($got->{ud}) eq flat($exp->{ud})
               && (metric($t, 'kroute_redis_pending_deltas') // 1) == 0;
    }, 10);
    sleep 0.6;
    my $got = totals($right);
    is_deeply($got->{h}, $exp->{h}, "$name: hour hash sums exact");
    is_deeply($got->{ud}, $exp->{ud}, "$name: user-day sums exact");
    is(metric($t, 'kroute_redis_pending_deltas'), 0, "$name: nothing pending");
}


# ---- the node that owns the slot -------------------------------------------

{
    my $t = gateway($right->addr);
    my @sent = wave($t, 30);
    is(scalar(grep { $_->{status} == 200 } @sent), 30,
       'owning node: all requests answered 200');
    check_totals('owning node', $t, @sent);
    is(metric($t, 'kroute_redis_connected'), 1, 'owning node: connected');

    # the instances set has no hash tag: its slot is elsewhere, and only
    # the batches follow redirects
    like($t->error_log,
         qr/\[info\].*kroute: redis SADD of the instance redirected: MOVED/,
         'owning node: registration redirected, logged at info');
    TODO: {
        local $TODO = 'kroute:instances has no hash tag: its SADD goes to '
                      . 'the batches\' node';
        my $members = eval { $set_owner->cmd('SMEMBERS', 'kroute:instances') }
                      || [];
        ok((grep { $_ eq $inst } @$members),
           'owning node: instance registered in the cluster');
    }
    $t->check_error_log(name => 'owning node: no alert');
}


# ---- another node: MOVED is followed -------------------------------------

{
    for my $node (@nodes) {
        my $keys = eval { $node->cmd('KEYS', "kroute:{$inst}:*") } || [];
        $node->cmd('DEL', $_) for @$keys;
    }

    my $t = gateway($wrong->addr);
    my @sent = wave($t, 15);
    my @slow = grep { $_->{status} != 200 || $_->{elapsed} > 2 } @sent;
    ok(!@slow, 'wrong node: every request answered 200 within 2s');

    # the node redirects with MOVED: the batches follow it to the owner
    check_totals('wrong node, redirected', $t, @sent);
    like($t->error_log,
         qr/\[notice\].*kroute: redis batches move to 127\.0\.0\.1:/,
         'wrong node: the redirect is followed and said once');
    unlike($t->error_log, qr/refused a batch: MOVED/,
           'wrong node: a redirect is not a refusal');
    is_deeply(totals($wrong), { h => {}, ud => {} },
              'wrong node: nothing written to the wrong node');
    $t->check_error_log(name => 'wrong node: no alert');
}

$_->stop for @nodes;
$mock->stop;

my $took = time - $started;
cmp_ok($took, '<', 60, sprintf 'took %.1fs', $took);

done_testing;
