#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Streaming: kroute asks the provider for usage (stream_options.
# include_usage) so that a stream can be metered, hides the extra usage
# chunk from a client that did not ask for it and keeps it for one that
# did, leaves every other byte alone however the stream is cut, and passes
# events on as they arrive instead of holding them back.

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
$t->write_file('openai.key', "sk-test-stream\n");

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

        # the same proxying without kroute: the timing baseline
        location /plain/ {
            proxy_pass http://127.0.0.1:%%MOCK_PORT%%/;
            proxy_http_version 1.1;
            proxy_buffering off;
        }
    }
EOF

my $FIX = 'openai-chat-sse-include-usage-reasoning.sse';
my $n = 0;

sub stream {
    my (%a) = @_;
    my $tid = 's' . ++$n;
    my $body = { model => $a{model} || 'gpt-5-nano', stream => JSON::PP::true,
                 messages => [ { role => 'user', content => 'Hello!' } ] };
    $body->{stream_options} = $a{stream_options} if $a{stream_options};
    my $r = $t->post($a{path} || '/v1/chat/completions', $body,
                     headers => [ 'X-Test-Id' => $tid,
                                  'X-Mock-Reply' => $a{fixture} || $FIX,
                                  @{ $a{headers} || [] } ]);
    $r->{tid} = $tid;
    $r->{up} = $mock->request_by_header('X-Test-Id', $tid);
    $r->{log} = $a{path} ? undef : $t->log_for($tid);
    return $r;
}

sub usage_events {
    my ($r) = @_;
    return grep {
        my $j = defined $_->{data} && $_->{data} ne '[DONE]'
                ? json_decode($_->{data}) : undef;
        ref $j eq 'HASH' && ref $j->{usage} eq 'HASH';
    } @{ $r->{events} };
}

sub include_usage {
    my ($r) = @_;
    my $so = $r->{up} && $r->{up}{json}{stream_options};
    return ref $so eq 'HASH' && JSON::PP::is_bool($so->{include_usage})
           && $so->{include_usage} ? 1 : 0;
}

# client did not ask for usage

my $r = stream();
is($r->{status}, 200, 'no stream_options: status');
like($r->{headers}{'content-type'}, qr{^text/event-stream},
     'no stream_options: content type');
is(include_usage($r), 1, 'no stream_options: include_usage sent upstream');
is(scalar usage_events($r), 0, 'no stream_options: no usage chunk to client');
ok($r->{body} eq Kroute::Mock::strip_usage_chunk(fixture($FIX)),
   'no stream_options: every other byte unchanged');
is($r->{events}[-1]{data}, '[DONE]', 'no stream_options: [DONE] last');
is("$r->{log}{input}/$r->{log}{output}", '12/100',
   'no stream_options: metered from the hidden usage chunk');

# client asked for usage

$r = stream(stream_options => { include_usage => JSON::PP::true });
is(include_usage($r), 1, 'include_usage true: sent upstream');
is(scalar usage_events($r), 1, 'include_usage true: client gets usage chunk');
ok($r->{body} eq fixture($FIX), 'include_usage true: stream unchanged');
is("$r->{log}{input}/$r->{log}{output}", '12/100',
   'include_usage true: metered');

# client said no: still metered, still hidden

$r = stream(stream_options => { include_usage => JSON::PP::false });
is(include_usage($r), 1, 'include_usage false: forced on upstream');
is(scalar usage_events($r), 0, 'include_usage false: usage chunk hidden');
is("$r->{log}{input}/$r->{log}{output}", '12/100',
   'include_usage false: metered');

# hiding the usage chunk whatever the write boundaries

for my $chunk ('1', '7', 'random:' . (time % 1000)) {
    for my $f ($FIX, 'openai-chat-sse-tool-calls-two-tools.sse',
               'openai-chat-sse-max-tokens-1.sse')
    {
        my $model = $f =~ /two-tools|max-tokens/ ? 'gpt-4o' : 'gpt-5-nano';
        $r = stream(fixture => $f, model => $model,
                    headers => [ 'X-Mock-Chunk' => $chunk ]);
        ok($r->{body} eq Kroute::Mock::strip_usage_chunk(fixture($f)),
           "$f chunk $chunk: client stream is the provider's minus usage");
        is($r->{log}{usage_source}, 'provider',
           "$f chunk $chunk: metered from provider usage");
    }
}

# other fields of stream_options are kept

$r = stream(stream_options => { include_usage => JSON::PP::true,
                                include_obfuscation => JSON::PP::false });
ok($r->{up} && exists $r->{up}{json}{stream_options}{include_obfuscation},
   'other stream_options fields kept');

# timing: events pass through as the provider sends them.  The provider
# waits 300 ms before each of its 4 events (the usage chunk included), so
# the first event must reach the client about 900 ms before the last.

my @delay = ('X-Mock-Chunk' => 'event', 'X-Mock-Delay-Ms' => 300);

my $base = stream(path => '/plain/v1/chat/completions',
                  stream_options => { include_usage => JSON::PP::true },
                  headers => \@delay);
my $spread = $base->{events}[-1]{time} - $base->{events}[0]{time};
cmp_ok($spread, '>=', 0.8, 'baseline without kroute: events spread out');
ok($base->{body} eq fixture($FIX), 'kroute off: stream untouched');
ok(!exists $base->{headers}{'x-kroute-model'}, 'kroute off: no headers');

$r = stream(headers => \@delay);
is(scalar @{ $r->{events} }, 3, 'delayed: 3 events to the client');
my $first = $r->{events}[0]{time} - $r->{sent_at};
my $last = $r->{events}[-1]{time} - $r->{sent_at};
cmp_ok($first, '<', 0.25, 'delayed: first event arrives at once');
cmp_ok($last - $first, '>=', 0.8,
       'delayed: first event seen long before the last was sent');
cmp_ok($r->{events}[1]{time} - $r->{sent_at}, '>=', 0.25,
       'delayed: second event arrives after its delay, not before');
cmp_ok($r->{log}{latency_ms}, '>=', 850, 'delayed: $kroute_latency_ms');
cmp_ok($r->{log}{ttft_ms}, '<', 250, 'delayed: $kroute_ttft_ms small');
cmp_ok($r->{log}{ttft_ms}, '<=', $r->{log}{latency_ms},
       'delayed: ttft not above latency');

$r = stream(headers => \@delay,
            stream_options => { include_usage => JSON::PP::true });
$first = $r->{events}[0]{time} - $r->{sent_at};
cmp_ok($first, '<', 0.25, 'delayed with usage: first event at once');
cmp_ok($r->{events}[-1]{time} - $r->{events}[0]{time}, '>=', 0.8,
       'delayed with usage: events not held back');

# the provider drops the connection mid-stream

$r = stream(headers => [ 'X-Mock-Cut-After' => 400 ]);
ok(!$r->{complete}, 'cut stream: client sees an incomplete stream');
ok(defined $r->{log}, 'cut stream: still logged');
is($r->{log}{usage_source}, 'estimate',
   'cut stream before the usage chunk: estimated, not free');

$mock->stop;
$t->check_error_log;

done_testing;
