#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Compressed provider replies: a gzip-encoded JSON reply or event stream,
# in whatever write sizes it arrives, is metered to the same exact tokens
# and cost as the plain one, and the client still gets a reply it can
# decode to the provider's content.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use JSON::PP;
use Test::More;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;

require_module();

my $t = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $t->testdir);
$t->set(MOCK_PORT => $mock->port);
$t->write_file('openai.key', "sk-test-gzip\n");
$t->write_file('anthropic.key', "sk-ant-test-gzip\n");

my $log_format = log_format('kroute');

$t->run(<<"EOF");
    $log_format

    kroute_zone kroute:1m;

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;
    kroute_provider anthropic url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/anthropic.key format=anthropic;

    kroute_model gpt-5-nano provider=openai input=2 output=8 cached=1
                 alias=gpt-5-nano-2025-08-07;
    kroute_model gpt-4o provider=openai input=3 output=12
                 alias=gpt-4o-2024-08-06;
    kroute_model claude-sonnet-4-5 provider=anthropic input=3 output=15
                 cached=1 cache_write=4 alias=claude-sonnet-4-5-20250929;

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

        location /v1/messages {
            kroute on;
            kroute_format anthropic;
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization "";
            proxy_set_header x-api-key \$kroute_api_key;
            proxy_set_header Host \$kroute_upstream_host;
            proxy_http_version 1.1;
            proxy_buffering off;
            access_log %%TESTDIR%%/access.log kroute;
        }
    }
EOF

my $seed = $ENV{TEST_KROUTE_SEED} || (time % 100000);
diag("random chunking seed $seed (TEST_KROUTE_SEED to repeat)");

# file, model, P, C, cached, micro-USD:
#   plain:  8 * 2 + 377 * 8 = 3032
#   two tools: 149 * 3 + 60 * 12 = 1167
#   long stream: 19 * 3 + 177 * 12 = 2181
#   anthropic cache read: (1114 - 1111) * 3 + 1111 * 1 + 406 * 15 = 7210

my @cases = (
    ['openai-chat-resp-plain-reasoning-model.json', 'gpt-5-nano',
     8, 377, 0, 3032],
    ['openai-chat-sse-tool-calls-two-tools.sse', 'gpt-4o', 149, 60, 0, 1167],
    ['openai-chat-sse-long-47kb.sse', 'gpt-4o', 19, 177, 0, 2181],
    ['anthropic-messages-resp-cache-read-1111.json', 'claude-sonnet-4-5',
     1114, 406, 1111, 7210],
);

my $n = 0;

for my $case (@cases) {
    my ($file, $model, $p, $c, $cached, $micro) = @$case;
    my $sse = $file =~ /\.sse$/;
    my $anthropic = $file =~ /^anthropic/;

    for my $chunk ('', '1', "random:$seed") {
        for my $ask (0, 1) {
            next if $ask && !$sse;

            my $tid = 'g' . ++$n;
            my $what = $file . ($chunk ? " chunk $chunk" : '')
                     . ($ask ? ', include_usage' : '');
            my $body = { model => $model,
                         messages => [ { role => 'user',
                                         content => 'Hello!' } ] };
            $body->{max_tokens} = 1024 if $anthropic;
            $body->{stream} = JSON::PP::true if $sse;
            $body->{stream_options} = { include_usage => JSON::PP::true }
                if $ask;

            my $r = $t->post($anthropic ? '/v1/messages'
                                        : '/v1/chat/completions',
                             $body, headers => [
                                 'X-Test-Id' => $tid,
                                 'Accept-Encoding' => 'gzip',
                                 'X-Mock-Reply' => $file,
                                 'X-Mock-Gzip' => 1,
                                 $chunk ? ('X-Mock-Chunk' => $chunk) : (),
                             ]);

            is($r->{status}, 200, "$what: status");

            my $want = fixture($file);
            $want = Kroute::Mock::strip_usage_chunk($want)
                if $sse && !$ask && !$anthropic;
            ok($r->{body} eq $want, "$what: client decodes the content");

            my $l = $t->log_for($tid);
            is_deeply([@$l{qw(input output cached usage_source)}],
                      [$p, $c, $cached, 'provider'],
                      "$what: input output cached from provider usage");
            is($l->{cost_micro_usd}, $micro, "$what: cost micro-USD");
        }
    }
}

$mock->stop;
$t->check_error_log(no_error => 1);

done_testing;
