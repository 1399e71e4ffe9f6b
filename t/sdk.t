#!/usr/bin/perl

# Copyright (C) kroute authors
#
# The official OpenAI SDK (Node, t/node) pointed at kroute gets exactly
# what it gets from the provider directly, non-streaming, streaming, with
# and without usage, and with tool calls, while the provider only ever
# sees kroute's key.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use JSON::PP;
use Test::More;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;

my $node = (grep { -x } map { "$_/node" } split /:/, $ENV{PATH})[0];
plan skip_all => 'node is not installed' unless $node;

require_module();

my $dir = File::Spec->catdir(repo_root(), 't', 'node');
my $sdk = File::Spec->catfile($dir, 'sdk.mjs');

ok(-d File::Spec->catdir($dir, 'node_modules', 'openai'),
   'openai SDK installed (run "npm ci" in t/node)')
    or BAIL_OUT('t/node/node_modules is missing: run npm ci in t/node');

my $t = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $t->testdir);
$t->set(MOCK_PORT => $mock->port);
$t->write_file('openai.key', "sk-provider-key-sdk\n");

my $log_format = log_format('kroute');

$t->run(<<"EOF");
    $log_format

    kroute_zone kroute:1m;

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;

    kroute_model gpt-5-nano provider=openai input=2 output=8
                 alias=gpt-5-nano-2025-08-07;
    kroute_model gpt-4o provider=openai input=3 output=12
                 alias=gpt-4o-2024-08-06;

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
    }
EOF

sub run_sdk {
    my ($base) = @_;
    my $out = `cd '$dir' && timeout 60 '$node' '$sdk' '$base' 2>&1`;
    my $j = json_decode((split /\n/, $out)[-1] // '');
    ok(ref $j eq 'HASH' && !$j->{error}, "SDK against $base ran")
        or diag($out);
    return $j || {};
}

my $direct = run_sdk($mock->url . '/v1');
my @direct_reqs = $mock->requests;
$mock->clear;

my $gw = run_sdk('http://127.0.0.1:' . $t->port . '/v1');
my @gw_reqs = $mock->requests;

# the direct results are what the fixtures hold

like($direct->{chat}{content} // '', qr/^Hi there!/, 'direct: chat content');
is($direct->{chat}{usage}{prompt_tokens}, 8, 'direct: chat usage');
is($direct->{stream}{usage}, undef, 'direct: stream without usage');
ok(length($direct->{stream}{content} // '') > 100, 'direct: stream content');
is($direct->{stream_usage}{usage}{completion_tokens}, 177,
   'direct: stream with usage');
ok(@{ $direct->{tool_call}{tool_calls} || [] } >= 1, 'direct: tool call');
is(scalar keys %{ $direct->{stream_tools}{tool_calls} || {} }, 2,
   'direct: two streamed tool calls');

# the gateway gives the SDK the same

for my $k (qw(chat stream stream_usage tool_call stream_tools)) {
    is_deeply($gw->{$k}, $direct->{$k}, "gateway = provider: $k");
}

# the provider sees kroute's key, never the application's

is(scalar @gw_reqs, 5, 'gateway: 5 upstream requests');
is_deeply([ map { $_->{headers}{authorization} } @gw_reqs ],
          [ ('Bearer sk-provider-key-sdk') x 5 ],
          'gateway: provider key upstream');
is($direct_reqs[0]{headers}{authorization},
   'Bearer sk-app-key-not-for-the-provider', 'direct: application key');

my @log = $t->access_log(n => 5);
is(scalar @log, 5, 'gateway: 5 requests logged');
is_deeply([ map { $_->{usage_source} } @log ], [ ('provider') x 5 ],
          'gateway: every SDK request metered from provider usage');
is("$log[0]{input}/$log[0]{output}", '8/377', 'gateway: chat tokens');

$mock->stop;
$t->check_error_log(no_error => 1);

done_testing;
