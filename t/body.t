#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Request bodies: kroute reads the chat request whether nginx holds it in
# memory or in a temporary file, whether it came with Content-Length or
# chunked, and rewrites only the model field, leaving every other byte as
# the client sent it; a body above kroute_body_max_size is refused with
# 413, a body that is not JSON with 400 or, with kroute_invalid_body pass,
# passed on and counted as unparsed.

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
$t->write_file('openai.key', "sk-test-body\n");

my $log_format = log_format('kroute');

my $proxy = <<'EOF';
            proxy_pass $kroute_upstream;
            proxy_set_header Authorization $kroute_authorization;
            proxy_set_header Host $kroute_upstream_host;
            proxy_http_version 1.1;
            proxy_buffering off;
            access_log %%TESTDIR%%/access.log kroute;
EOF

$t->run(<<"EOF");
    $log_format

    kroute_zone kroute:1m;

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;

    kroute_model gpt-5-nano provider=openai input=2 output=8
                 alias=nano-alias,gpt-5-nano-2025-08-07;
    kroute_model gpt-5.6-sol provider=openai input=5 output=20
                 alias=sol-alias;

    server {
        listen 127.0.0.1:%%PORT%%;

        kroute on;
        client_max_body_size 10m;

        location /v1/chat/completions {
            client_body_buffer_size 64k;
$proxy
        }

        location /file/v1/chat/completions {
            client_body_buffer_size 1k;
$proxy
        }

        location /small/v1/chat/completions {
            kroute_body_max_size 4k;
$proxy
        }

        location /pass/v1/chat/completions {
            kroute_invalid_body pass;
            kroute_fallback gpt-5-nano;
$proxy
        }
    }
EOF

my $n = 0;

sub send_body {
    my ($path, $body, %a) = @_;
    my $tid = 'b' . ++$n;
    my $r = $t->request(method => 'POST', path => $path, body => $body,
                        chunked => $a{chunked},
                        chunk_delay_ms => $a{chunk_delay_ms},
                        headers => [ 'Content-Type' => 'application/json',
                                     'X-Test-Id' => $tid,
                                     @{ $a{headers} || [] } ]);
    $r->{tid} = $tid;
    $r->{up} = $mock->request_by_header('X-Test-Id', $tid) unless $a{no_up};
    $r->{log} = $t->log_for($tid);
    return $r;
}

# every recorded request, its model replaced by an alias: upstream gets
# the recorded bytes back, i.e. only the model value changed

my @fixtures = grep { !/unknown-model|empty-messages/ }
               map { (File::Spec->splitpath($_))[2] }
               glob(File::Spec->catfile(Kroute::Mock::fixtures_dir(),
                                        'openai-chat-req-*.json'));

for my $f (@fixtures) {
    my $orig = fixture($f);
    (my $sent = $orig) =~ s/"model": "gpt-5-nano"/"model": "nano-alias"/;
    $sent =~ s/"model": "gpt-5.6-sol"/"model": "sol-alias"/;
    my $stream = $orig =~ /"stream": true/;

    for my $where (['/v1/chat/completions', 'memory'],
                   ['/file/v1/chat/completions', 'temp file'])
    {
        for my $chunked (undef, [1000, 7, 5000]) {
            my $what = "$f in $where->[1]" . ($chunked ? ', chunked' : '');
            my $r = send_body($where->[0], $sent, chunked => $chunked);
            is($r->{status}, 200, "$what: status");
            my $up = $r->{up};
            ok($up, "$what: reached the provider") or next;
            if ($stream) {
                my ($a, $b) = (json_decode($up->{body}), json_decode($orig));
                delete $_->{stream_options} for $a, $b;
                is_deeply($a, $b, "$what: body kept but for stream_options");
            } else {
                ok($up->{body} eq $orig,
                   "$what: only the model value rewritten")
                    or diag("got: " . substr($up->{body}, 0, 300));
            }
            is($r->{log}{parse}, 'ok', "$what: parsed");
        }
    }
}

# no messages: refused, by kroute or by the provider, as an OpenAI error

for my $where ('/v1/chat/completions', '/file/v1/chat/completions') {
    my $r = send_body($where, fixture('openai-chat-req-empty-messages.json'),
                      no_up => 1, headers => [ 'X-Mock-Reply' =>
                          'openai-error-400-context-length-exceeded.json' ]);
    is($r->{status}, 400, "empty messages at $where: 400");
    openai_error($r, "empty messages at $where") if $r->{status} == 400
        && !$r->{headers}{'x-mock-fixture'};
}

# a body read into a temp file in many small chunks, slowly

my $long = fixture('openai-chat-req-long-content-13kb-prompt-cache.json');
my $r = send_body('/file/v1/chat/completions', $long,
                  chunked => [ (512) x 30 ], chunk_delay_ms => 5);
is($r->{status}, 200, 'slow chunked body into a temp file: status');
ok($r->{up} && $r->{up}{body} eq $long, 'slow chunked body: unchanged');

# body size limit

my $big = { model => 'gpt-5-nano',
            messages => [ { role => 'user', content => 'x' x 5000 } ] };
my $big_json = JSON::PP->new->canonical->encode($big);
$r = send_body('/small/v1/chat/completions', $big_json, no_up => 1);
is($r->{status}, 413, 'body over kroute_body_max_size: 413');
openai_error($r, 'body over limit');
ok(!$mock->request_by_header('X-Test-Id', $r->{tid}),
   'body over limit: not sent upstream');

$r = send_body('/small/v1/chat/completions', $big_json, no_up => 1,
               chunked => [ 1024 ]);
is($r->{status}, 413, 'chunked body over kroute_body_max_size: 413');

$r = send_body('/small/v1/chat/completions',
               fixture('openai-chat-req-plain.json'));
is($r->{status}, 200, 'body under kroute_body_max_size: 200');

# default limit is 1m

my $huge = JSON::PP->new->canonical->encode(
    { model => 'gpt-5-nano',
      messages => [ { role => 'user', content => 'y' x (1100 * 1024) } ] });
$r = send_body('/file/v1/chat/completions', $huge, no_up => 1);
is($r->{status}, 413, 'body over the default 1m: 413');

# invalid JSON

for my $bad ('{"model": "gpt-5-nano", "messages": [', 'not json at all',
             '[1, 2, 3]')
{
    $r = send_body('/v1/chat/completions', $bad, no_up => 1);
    is($r->{status}, 400, "invalid body '$bad': 400");
    openai_error($r, "invalid body '$bad'");
    ok(!$mock->request_by_header('X-Test-Id', $r->{tid}),
       "invalid body '$bad': not sent upstream");
}

$r = send_body('/v1/chat/completions', '', no_up => 1);
is($r->{status}, 400, 'empty body: 400');

# kroute_invalid_body pass: passed on untouched and counted as unparsed

$r = send_body('/pass/v1/chat/completions', 'not json at all');
is($r->{status}, 200, 'invalid body, pass: status from the provider');
ok($r->{up} && $r->{up}{body} eq 'not json at all',
   'invalid body, pass: body passed on as is');
is($r->{log}{parse}, 'unparsed', 'invalid body, pass: $kroute_parse');

$r = send_body('/pass/v1/chat/completions',
               fixture('openai-chat-req-plain.json'));
is($r->{log}{parse}, 'ok', 'valid body in pass location: parsed');

$mock->stop;
$t->check_error_log(no_error => 1);

done_testing;


sub openai_error {
    my ($r, $name) = @_;
    my $j = json_decode($r->{body});
    ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
       && defined $j->{error}{message}
       && ($j->{error}{type} || '') eq 'invalid_request_error'
       && exists $j->{error}{param} && exists $j->{error}{code},
       "$name: OpenAI error shape") or diag($r->{body});
}
