#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Prometheus metrics: the kroute_metrics location serves text that
# promtool accepts, with exact request, token and cost counters labelled
# by feature and model but never by user; a real Prometheus scraping it
# reads the same values back; the counters live in shared memory and
# survive nginx -s reload.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Open3;
use JSON::PP;
use POSIX qw(WNOHANG);
use Symbol qw(gensym);
use Test::More;
use Time::HiRes qw(sleep time);

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;

require_module();

my $t = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $t->testdir);
$t->set(MOCK_PORT => $mock->port);
$t->write_file('openai.key', "sk-test-metrics-key\n");

my $log_format = log_format('kroute');

my $conf = <<"EOF";
    $log_format

    kroute_zone kroute:1m;

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;

    kroute_model gpt-5-nano provider=openai input=2 output=8 cached=1
                 alias=gpt-5-nano-2025-08-07;

    kroute_feature \$http_x_feature;
    kroute_user \$http_x_user;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /v1/chat/completions {
            kroute on;
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization \$kroute_authorization;
            proxy_set_header Host \$kroute_upstream_host;
            proxy_http_version 1.1;
            proxy_buffering off;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location = /metrics {
            kroute_metrics;
            access_log off;
        }
    }
EOF

$t->run($conf);

my $USER = 'user-secret-4242';
my $n = 0;

sub chat {
    my ($fixture, $stream, @h) = @_;
    my $tid = 'x' . ++$n;
    my $body = { model => 'gpt-5-nano',
                 messages => [ { role => 'user', content => 'Hello!' } ] };
    $body->{stream} = JSON::PP::true if $stream;
    my $r = $t->post('/v1/chat/completions', $body,
                     headers => [ 'X-Test-Id' => $tid,
                                  'X-Mock-Reply' => $fixture,
                                  'X-Feature' => 'chat-ui',
                                  'X-User' => $USER, @h ]);
    $r->{log} = $t->log_for($tid);
    return $r;
}

sub cost_pusd_total {
    my ($text) = @_;
    my $sum = 0;
    for (split /\n/, $text) {
        next unless /^kroute_cost_usd_total(?:\{[^}]*\})? (\S+)$/;
        my $p = usd_to_pusd($1);
        return "unparsable cost $1" unless defined $p;
        $sum += $p;
    }
    return $sum;
}

my $first = chat('openai-chat-resp-plain-reasoning-model.json', 0);
is($first->{log}{feature}, 'chat-ui', '$kroute_feature from a header');
is($first->{log}{user}, $USER, '$kroute_user from a header, in the log');
chat('openai-chat-resp-plain-reasoning-model.json', 0);
chat('openai-chat-sse-include-usage-reasoning.sse', 1);
chat('openai-error-429-rate-limit-tpm.json', 0);

my $text = $t->metrics;
ok(defined $text, 'metrics served');
$text = '' unless defined $text;

my ($rc, $out) = promtool($text);
is($rc, 0, 'promtool check metrics accepts the text') or diag($out);

like($text, qr/^# TYPE kroute_requests_total counter$/m,
     'requests counter typed');

# plain reply: P 8, C 377; stream: P 12, C 100; the error: 0 and 0
is(metric_sum($text, 'kroute_requests_total'), 4, 'requests_total 4');
is(metric_sum($text, 'kroute_requests_total', { feature => 'chat-ui' }), 4,
   'requests_total labelled by feature');
is(metric_sum($text, 'kroute_requests_total', { model => 'gpt-5-nano' }), 4,
   'requests_total labelled by model');
is(metric_sum($text, 'kroute_errors_total'), 1, 'errors_total 1');
is(metric_sum($text, 'kroute_tokens_total', { type => 'input' }),
   8 + 8 + 12, 'input tokens');
is(metric_sum($text, 'kroute_tokens_total', { type => 'output' }),
   377 + 377 + 100, 'output tokens');
is(metric_sum($text, 'kroute_tokens_total', { type => 'reasoning' }),
   320 + 320 + 100, 'reasoning tokens');

# cost = 2 * (8 * 2 + 377 * 8) + (12 * 2 + 100 * 8) = 6888 micro-USD
is(cost_pusd_total($text), 6888 * 1_000_000, 'cost_usd_total exact');

unlike($text, qr/\Q$USER\E/, 'no user id in the metrics');
unlike($text, qr/\buser="/, 'no user label');
unlike($text, qr/sk-test-metrics-key/, 'no provider key in the metrics');

# counters survive a reload

$t->reload;
$text = $t->metrics || '';
is(metric_sum($text, 'kroute_requests_total'), 4, 'after reload: still 4');
is(cost_pusd_total($text), 6888 * 1_000_000, 'after reload: same cost');

chat('openai-chat-resp-plain-reasoning-model.json', 0);
$text = $t->metrics || '';
is(metric_sum($text, 'kroute_requests_total'), 5, 'after reload: counts on');
is(metric_sum($text, 'kroute_tokens_total', { type => 'input' }), 36,
   'after reload: input tokens 36');

# a reload with a changed catalog keeps the zone too

(my $conf2 = $conf) =~ s/input=2 output=8 cached=1/input=2 output=8 cached=1.5/;
$t->reload($conf2);
$text = $t->metrics || '';
is(metric_sum($text, 'kroute_requests_total'), 5,
   'after reload with a new catalog: still 5');

# concurrent clients on both workers: nothing lost, nothing doubled
# (8 clients x 5 requests, alternating the plain reply, P 8, and the
# stream, P 12)

my $SSE = 'openai-chat-sse-include-usage-reasoning.sse';
my $JSON = 'openai-chat-resp-plain-reasoning-model.json';
my @kids;
for my $k (1 .. 8) {
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        for my $i (1 .. 5) {
            my $sse = ($k + $i) % 2;
            $t->post('/v1/chat/completions',
                     { model => 'gpt-5-nano',
                       $sse ? (stream => JSON::PP::true) : (),
                       messages => [ { role => 'user',
                                       content => 'Hello!' } ] },
                     headers => [ 'X-Mock-Reply' => $sse ? $SSE : $JSON,
                                  'X-Feature' => 'load' ],
                     timeout => 20);
        }
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;

# a request is counted when nginx finalizes it, which may be a moment
# after the client saw the end of the reply

my $deadline = time + 5;
while (1) {
    $text = $t->metrics || '';
    last if metric_sum($text, 'kroute_requests_total') >= 45
            || time > $deadline;
    sleep 0.1;
}
is(metric_sum($text, 'kroute_requests_total', { feature => 'load' }), 40,
   'concurrent: 40 requests counted');
is(metric_sum($text, 'kroute_tokens_total', { feature => 'load',
                                               type => 'input' }),
   20 * 8 + 20 * 12, 'concurrent: input tokens exact');
is(metric_sum($text, 'kroute_requests_total'), 45, 'concurrent: total 45');

# a real Prometheus scraping the endpoint

SKIP: {
    skip 'prometheus not installed', 3 unless -x '/usr/bin/prometheus';

    my $pport = Kroute::Test::free_port();
    my $pdir = File::Spec->catdir($t->testdir, 'prometheus');
    mkdir $pdir;
    $t->write_file('prometheus/prometheus.yml', <<"EOF");
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: kroute
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:${\ $t->port}']
EOF

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>', "$pdir/stdout";
        open STDERR, '>', "$pdir/stderr";
        { exec '/usr/bin/prometheus', "--config.file=$pdir/prometheus.yml",
               "--storage.tsdb.path=$pdir/data",
               "--web.listen-address=127.0.0.1:$pport"; }
        POSIX::_exit(127);
    }

    my $http = HTTP::Tiny->new(timeout => 2);
    my $q = sub {
        my ($expr) = @_;
        my $res = $http->get("http://127.0.0.1:$pport/api/v1/query?query="
                             . uri_escape($expr));
        return undef unless $res->{success};
        my $j = json_decode($res->{content});
        my $v = $j && $j->{data}{result}[0]{value}[1];
        return $v;
    };

    my ($requests, $input);
    my $deadline = time + 40;
    while (time < $deadline) {
        $requests = $q->('sum(kroute_requests_total)');
        last if defined $requests && $requests == 45;
        sleep 0.5;
    }
    is($requests, 45, 'prometheus: sum(kroute_requests_total) is 45');
    $input = $q->('sum(kroute_tokens_total{type="input"})');
    is($input, 36 + 400, 'prometheus: input tokens 436');
    my $by = $q->('sum(kroute_requests_total{feature="chat-ui"})');
    is($by, 5, 'prometheus: by feature');

    kill 'TERM', $pid;
    my $end = time + 10;
    sleep 0.1 while waitpid($pid, WNOHANG) == 0 && time < $end;
    if (waitpid($pid, WNOHANG) == 0) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
}

$mock->stop;
$t->check_error_log(no_error => 1);

done_testing;


sub promtool {
    my ($input) = @_;
    return (-1, 'promtool not installed') unless -x '/usr/bin/promtool';
    my $err = gensym;
    my $pid = open3(my $in, my $o, $err, '/usr/bin/promtool', 'check',
                    'metrics');
    print $in $input;
    close $in;
    local $/;
    my $output = (<$o> // '') . (<$err> // '');
    waitpid($pid, 0);
    return ($? >> 8, $output);
}


sub uri_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ge;
    return $s;
}
