#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Hostile input that must not poison what kroute reports: attribution
# values with invalid UTF-8 and control bytes keep the Prometheus page
# valid; a provider reporting absurd usage is not believed (the request
# is estimated, counters do not wrap); an Anthropic stream cut before its
# message_delta is estimated, not billed at the placeholder usage of
# message_start; a body over nginx's own client_max_body_size is refused
# by nginx before kroute sees it, which is why kroute_body_max_size must
# not exceed it.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use IPC::Open3;
use Symbol qw(gensym);
use Test::More;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;

require_module();

my $t = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $t->testdir);
$t->set(MOCK_PORT => $mock->port);
$t->write_file('openai.key', "sk-hostile-openai\n");
$t->write_file('anthropic.key', "sk-hostile-anthropic\n");

my $log_format = log_format('kroute');

$t->run(<<"EOF");
    $log_format

    kroute_zone kroute:1m;

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;
    kroute_provider anthropic url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/anthropic.key format=anthropic;

    kroute_model gpt-5-nano provider=openai input=0.05 output=0.4
                 alias=gpt-5-nano-2025-08-07 quality=default:60;
    kroute_model claude-sonnet-4 provider=anthropic input=3 output=15
                 alias=claude-sonnet-4-20250514 quality=default:90;

    server {
        listen 127.0.0.1:%%PORT%%;
        client_max_body_size 4k;

        location /v1/chat/completions {
            kroute on;
            kroute_feature \$http_x_feature;
            kroute_cohort \$http_x_cohort;
            kroute_agent \$http_x_agent;
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization \$kroute_authorization;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location /v1/messages {
            kroute on;
            kroute_format anthropic;
            proxy_pass \$kroute_upstream;
            proxy_set_header x-api-key \$kroute_api_key;
            proxy_buffering off;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location = /metrics {
            kroute_metrics;
        }
    }
EOF

my $n = 0;

sub post {
    my ($path, $body, @headers) = @_;
    my $tid = 'h' . ++$n;
    my $r = $t->post($path, $body,
                     headers => [ 'X-Test-Id' => $tid, @headers ]);
    $r->{log} = $t->log_for($tid);
    return $r;
}

my $chat = { model => 'gpt-5-nano',
             messages => [ { role => 'user', content => 'Hello!' } ] };

# invalid UTF-8, control bytes, quotes and backslashes in attribution

my $r = post('/v1/chat/completions', $chat,
             'X-Feature' => "a\tb\x01c\x7fd\xff\xfee\"f\\g",
             'X-Cohort' => "caf\xc3\xa9-\xe2\x82");
is($r->{status}, 200, 'bad bytes: request served');

# well-formed only: surrogates, bad continuation bytes and lead bytes
# above 0xf4 are not UTF-8 either

$r = post('/v1/chat/completions', $chat,
          'X-Agent' => "s\xed\xa0\x80t\xc3\xc3u\xf9\x80\x80\x80v\xf0\x9f\x98\x80");
is($r->{status}, 200, 'ill-formed UTF-8: request served');

my $text = $t->metrics;
like($text, qr/feature="a_b_c_d__e\\"f\\\\g"/,
     'bad bytes: control and non-UTF-8 bytes become "_", quotes escaped');
like($text, qr/cohort="caf\xc3\xa9-__"/,
     'bad bytes: valid UTF-8 kept, each byte of a cut sequence becomes "_"');

like($text, qr/agent="s___t__u____v\xf0\x9f\x98\x80"/,
     'ill-formed UTF-8: each byte becomes "_", a 4-byte emoji is kept');

SKIP: {
    skip 'promtool not installed', 1 unless -x '/usr/bin/promtool';
    my $err = gensym;
    my $pid = open3(my $in, my $out, $err, '/usr/bin/promtool', 'check',
                    'metrics');
    print $in $text;
    close $in;
    local $/;
    my $o = (<$out> // '') . (<$err> // '');
    waitpid($pid, 0);
    is($? >> 8, 0, 'bad bytes: promtool accepts the page') or diag($o);
}

# a provider reporting 2^63 - 1 tokens: not believed, estimated

$r = post('/v1/chat/completions', $chat,
          'X-Mock-Reply' => 'crafted-openai-resp-usage-overflow.json');
is($r->{status}, 200, 'absurd usage: passed on');
is($r->{log}{usage_source}, 'estimate', 'absurd usage: estimated');

# estimate: input from the request (ceil(6 / 4) + 4 + 3 = 9 tokens),
# output from the text of a JSON reply is not counted: 0

is($r->{log}{input}, 9, 'absurd usage: input estimated from the request');
like($t->error_log, qr/\[warn\].*provider usage out of range/,
     'absurd usage: warned');

$text = $t->metrics;
my ($in) = $text =~ /^kroute_tokens_total\{[^}]*type="input"\} (\d+)$/m;
cmp_ok($in, '<', 1000, 'absurd usage: counters did not take it');

# an Anthropic stream cut before message_delta: input as the provider
# counted it, output estimated from the text seen, marked estimate

my $msg = { model => 'claude-sonnet-4', max_tokens => 1024, stream => \1,
            messages => [ { role => 'user', content => 'Think.' } ] };

$r = post('/v1/messages', $msg,
          'X-Mock-Reply' => 'anthropic-messages-sse-thinking.sse',
          'X-Mock-Cut-After' => 700);
is($r->{log}{usage_source}, 'estimate', 'cut anthropic stream: estimate');
is($r->{log}{input}, 43, 'cut anthropic stream: provider input kept');

$r = post('/v1/messages', $msg,
          'X-Mock-Reply' => 'anthropic-messages-sse-thinking.sse');
is($r->{log}{usage_source}, 'provider', 'whole anthropic stream: provider');
is($r->{log}{output}, 282, 'whole anthropic stream: output 282');

# nginx's own limit comes first: kroute_body_max_size must stay below it

my $big = { model => 'gpt-5-nano',
            messages => [ { role => 'user', content => 'x' x 8000 } ] };
$r = post('/v1/chat/completions', $big);
is($r->{status}, 413, 'over client_max_body_size: 413 from nginx');

$t->check_error_log;

done_testing();
