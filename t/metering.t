#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Metering: every recorded provider reply, JSON or streamed, whole or cut
# into 1-byte or random writes, is metered to the exact token counts of the
# fixtures README and to the exact cost in the access log; a stream
# without provider usage is estimated, never reported as 0; provider errors
# bill 0 tokens and carry an error class.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use Test::More;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;

require_module();

my $t = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $t->testdir);
$t->set(MOCK_PORT => $mock->port);
$t->write_file('openai.key', "sk-test-openai-metering\n");
$t->write_file('anthropic.key', "sk-ant-test-metering\n");

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
    kroute_model gpt-5.6-sol provider=openai input=5 output=20 cached=1
                 cache_write=7;
    kroute_model gpt-4o provider=openai input=2.5 output=10
                 alias=gpt-4o-2024-08-06;
    kroute_model claude-3-opus provider=anthropic input=15 output=75
                 alias=claude-3-opus-latest;
    kroute_model claude-sonnet-4 provider=anthropic input=3 output=15
                 cached=1 cache_write=4
                 alias=claude-sonnet-4-20250514,claude-sonnet-4-0;
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

# Prices of the catalog above in pico-USD per token (= micro-USD per 1M
# tokens).  No cached price bills cached tokens at the input price, no
# cache_write price bills cache writes at the input price.

my %price = (
    'gpt-5-nano'        => [2_000_000, 1_000_000, 2_000_000, 8_000_000],
    'gpt-5.6-sol'       => [5_000_000, 1_000_000, 7_000_000, 20_000_000],
    'gpt-4o'            => [2_500_000, 2_500_000, 2_500_000, 10_000_000],
    'claude-3-opus'     => [15_000_000, 15_000_000, 15_000_000, 75_000_000],
    'claude-sonnet-4'   => [3_000_000, 1_000_000, 4_000_000, 15_000_000],
    'claude-sonnet-4-5' => [3_000_000, 1_000_000, 4_000_000, 15_000_000],
);

# cost_pusd = uncached * input + cached * cached_price
#             + cache_write * cw_price + output * output_price
# with uncached = P - cached - cache_write

sub cost_pusd {
    my ($model, $p, $c, $cached, $cw) = @_;
    my ($in, $cin, $cwin, $out) = @{ $price{$model} };
    return ($p - $cached - $cw) * $in + $cached * $cin + $cw * $cwin
           + $c * $out;
}

# the table of the fixtures README: file, catalog model requested, model
# reported, P, C, cached, cache_write, reasoning ("-" in the README is 0)

my @cases = (
    ['openai-chat-resp-plain-reasoning-model.json', 'gpt-5-nano',
     'gpt-5-nano-2025-08-07', 8, 377, 0, 0, 320],
    ['openai-chat-resp-multiturn.json', 'gpt-5-nano',
     'gpt-5-nano-2025-08-07', 50, 526, 0, 0, 512],
    ['openai-chat-resp-tool-call.json', 'gpt-5-nano',
     'gpt-5-nano-2025-08-07', 162, 287, 0, 0, 256],
    ['openai-chat-resp-finish-length-tool-choice.json', 'gpt-5-nano',
     'gpt-5-nano-2025-08-07', 206, 150, 0, 0, 150],
    ['openai-chat-resp-json-object.json', 'gpt-5-nano',
     'gpt-5-nano-2025-08-07', 21, 280, 0, 0, 256],
    ['openai-chat-resp-image-url-2245-prompt.json', 'gpt-5-nano',
     'gpt-5-nano-2025-08-07', 2245, 100, 0, 0, 100],
    ['openai-chat-resp-cache-write-4012.json', 'gpt-5.6-sol',
     'gpt-5.6-sol', 4020, 4, 0, 4012, 0],
    ['openai-chat-resp-cache-read-4012.json', 'gpt-5.6-sol',
     'gpt-5.6-sol', 4020, 4, 4012, 0, 0],
    ['openai-chat-sse-include-usage-reasoning.sse', 'gpt-5-nano',
     'gpt-5-nano-2025-08-07', 12, 100, 0, 0, 100],
    ['openai-chat-sse-tool-calls-two-tools.sse', 'gpt-4o',
     'gpt-4o-2024-08-06', 149, 60, 0, 0, 0],
    ['openai-chat-sse-long-47kb.sse', 'gpt-4o',
     'gpt-4o-2024-08-06', 19, 177, 0, 0, 0],
    ['openai-chat-sse-max-tokens-1.sse', 'gpt-4o',
     'gpt-4o-2024-08-06', 79, 1, 0, 0, 0],
    ['anthropic-messages-sse-basic.sse', 'claude-3-opus',
     'claude-3-opus-latest', 11, 6, 0, 0, 0],
    ['anthropic-messages-sse-tool-use.sse', 'claude-sonnet-4',
     'claude-sonnet-4-20250514', 377, 65, 0, 0, 0],
    ['anthropic-messages-sse-thinking.sse', 'claude-sonnet-4',
     'claude-sonnet-4-20250514', 43, 282, 0, 0, 0],
    ['anthropic-messages-resp-cache-read-1111.json', 'claude-sonnet-4-5',
     'claude-sonnet-4-5-20250929', 1114, 406, 1111, 0, 0],
);

# the hand computed costs of a few rows, to keep cost_pusd() honest:
# plain: 8 * 2 + 377 * 8 = 3032 micro-USD
# cache write: (4020 - 4012) * 5 + 4012 * 7 + 4 * 20 = 28204 micro-USD
# anthropic cache read: 3 * 3 + 1111 * 1 + 406 * 15 = 7210 micro-USD
# two tools at 2.5/10: 149 * 2.5 + 60 * 10 = 972.5 micro-USD, kept exact

is(cost_pusd('gpt-5-nano', 8, 377, 0, 0), 3_032_000_000, 'cost check plain');
is(cost_pusd('gpt-5.6-sol', 4020, 4, 0, 4012), 28_204_000_000,
   'cost check cache write');
is(cost_pusd('claude-sonnet-4-5', 1114, 406, 1111, 0), 7_210_000_000,
   'cost check anthropic cache read');
is(cost_pusd('gpt-4o', 149, 60, 0, 0), 972_500_000, 'cost check fraction');

my $seed = $ENV{TEST_KROUTE_SEED} || (time % 100000);
diag("random chunking seed $seed (TEST_KROUTE_SEED to repeat)");

my $n = 0;

for my $case (@cases) {
    my ($file, $model, $reported, $p, $c, $cached, $cw, $reason) = @$case;
    my $sse = $file =~ /\.sse$/;
    my $anthropic = $file =~ /^anthropic-/;
    my @chunkings = $sse ? ('event', '1', "random:$seed") : ('', '1');

    for my $chunk (@chunkings) {
        my $tid = 'm' . ++$n;
        my $what = "$file" . ($chunk ? " chunk $chunk" : '');
        my $body = request_body($model, $sse, $anthropic);

        my $r = $t->post($anthropic ? '/v1/messages' : '/v1/chat/completions',
                         $body, headers => [
                             'X-Test-Id' => $tid,
                             'X-Mock-Reply' => $file,
                             $chunk ? ('X-Mock-Chunk' => $chunk) : (),
                         ]);

        is($r->{status}, 200, "$what: status");
        if (!$sse || $anthropic) {
            ok($r->{body} eq fixture($file),
               "$what: client got the provider bytes unchanged");
        }

        my $up = $mock->request_by_header('X-Test-Id', $tid);
        if ($anthropic) {
            is($up && $up->{headers}{'x-api-key'}, 'sk-ant-test-metering',
               "$what: anthropic key in x-api-key");
            ok($up && !exists $up->{headers}{authorization},
               "$what: no Authorization to anthropic");
        } else {
            is($up && $up->{headers}{authorization},
               'Bearer sk-test-openai-metering', "$what: openai key");
        }
        is($up && $up->{json}{model}, $model, "$what: model upstream");

        my $l = $t->log_for($tid);
        ok($l, "$what: access log line") or next;

        my $pusd = cost_pusd($model, $p, $c, $cached, $cw);
        is_deeply([@$l{qw(input output cached cache_write reasoning)}],
                  [$p, $c, $cached, $cw, $reason],
                  "$what: input output cached cache_write reasoning");
        is($l->{usage_source}, 'provider', "$what: usage source");
        is($l->{model_reported}, $reported, "$what: model reported");
        is($l->{cost_micro_usd}, micro_usd($pusd), "$what: cost micro-USD");
        is(usd_to_pusd($l->{cost_usd}), $pusd,
           "$what: cost USD $l->{cost_usd} is exact");
    }
}

# a stream without any usage chunk: estimated, not free

for my $chunk ('event', '1') {
    my $tid = 'm' . ++$n;
    my $r = $t->post('/v1/chat/completions',
                     request_body('gpt-5-nano', 1, 0), headers => [
                         'X-Test-Id' => $tid,
                         'X-Mock-Reply' => 'openai-chat-sse-no-usage-chunk.sse',
                         'X-Mock-Chunk' => $chunk,
                     ]);
    is($r->{status}, 200, "no usage chunk $chunk: status");
    my $l = $t->log_for($tid);
    is($l->{usage_source}, 'estimate', "no usage chunk $chunk: estimate");
    cmp_ok($l->{input} || 0, '>', 0, "no usage chunk $chunk: input estimated");
    cmp_ok($l->{output} || 0, '>', 0,
           "no usage chunk $chunk: output estimated");
    cmp_ok(usd_to_pusd($l->{cost_usd}) || 0, '>', 0,
           "no usage chunk $chunk: cost estimated");
}

# provider errors: 0 tokens, 0 cost, status passed on, an error class

my @errors = (
    ['openai-error-400-context-length-exceeded.json', 400, qr/context/i],
    ['openai-error-429-insufficient-quota.json', 429, qr/quota/i],
    ['openai-error-429-rate-limit-tpm.json', 429, qr/rate/i],
    ['openai-error-500-server-error.json', 500, qr/5xx|server|upstream/i],
    ['anthropic-error-429-rate-limit.json', 429, qr/rate/i],
    ['anthropic-error-529-overloaded.json', 529, qr/overload/i],
);

for my $e (@errors) {
    my ($file, $status, $class) = @$e;
    my $anthropic = $file =~ /^anthropic-/;
    my $tid = 'm' . ++$n;
    my $r = $t->post($anthropic ? '/v1/messages' : '/v1/chat/completions',
                     request_body($anthropic ? 'claude-3-opus' : 'gpt-5-nano',
                                  0, $anthropic),
                     headers => [ 'X-Test-Id' => $tid,
                                  'X-Mock-Reply' => $file ]);
    is($r->{status}, $status, "$file: status passed on");
    ok($r->{body} eq fixture($file), "$file: error body passed on");
    my $l = $t->log_for($tid);
    is_deeply([@$l{qw(input output cached cache_write)}], [0, 0, 0, 0],
              "$file: 0 tokens");
    is(usd_to_pusd($l->{cost_usd}), 0, "$file: 0 cost");
    like($l->{error_class}, $class, "$file: error class $l->{error_class}");
}

$mock->stop;
$t->check_error_log(no_error => 1);

done_testing;


sub request_body {
    my ($model, $stream, $anthropic) = @_;
    my $b = { model => $model,
              messages => [ { role => 'user', content => 'Hello!' } ] };
    $b->{max_tokens} = 1024 if $anthropic;
    $b->{stream} = JSON::PP::true if $stream;
    return $b;
}


# micro-USD as $kroute_cost_micro_usd prints it: the fraction kept, trailing
# zeros trimmed

sub micro_usd {
    my ($pusd) = @_;
    my $s = sprintf('%d.%06d', int($pusd / 1_000_000), $pusd % 1_000_000);
    $s =~ s/0+$//;
    $s =~ s/\.$//;
    return $s;
}
