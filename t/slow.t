#!/usr/bin/perl

# Copyright (C) kroute authors
#
# A streaming client that reads slower than the provider sends, on a
# stream whose usage kroute asked for itself: kroute stops editing the
# stream rather than piling up copies, says so once, delivers every byte
# the provider sent, and still meters the usage exactly.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Test::More;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;

require_module();

my $t = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $t->testdir);
$t->set(MOCK_PORT => $mock->port);
$t->write_file('openai.key', "sk-slow-openai\n");

my $log_format = log_format('kroute');

$t->run(<<"EOF");
    $log_format

    kroute_zone kroute:1m;

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;
    kroute_model gpt-4o provider=openai input=2.5 output=10
                 alias=gpt-4o-2024-08-06 quality=default:90;

    server {
        listen 127.0.0.1:%%PORT%% sndbuf=4k;

        location /v1/chat/completions {
            kroute on;
            kroute_response_buffer_size 1k;
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization \$kroute_authorization;
            proxy_buffering off;
            access_log %%TESTDIR%%/access.log kroute;
        }
    }
EOF

my $fixture = 'openai-chat-sse-long-47kb.sse';
my $body = '{"model":"gpt-4o","stream":true,'
         . '"messages":[{"role":"user","content":"Tell a story."}]}';

my $s = IO::Socket::INET->new(Proto => 'tcp');
setsockopt($s, SOL_SOCKET, SO_RCVBUF, 4096);
$s->connect(Socket::pack_sockaddr_in($t->port, Socket::inet_aton('127.0.0.1')))
    or die "connect: $!\n";

print $s "POST /v1/chat/completions HTTP/1.1\r\n"
       . "Host: localhost\r\nConnection: close\r\n"
       . "Content-Type: application/json\r\n"
       . "X-Test-Id: slow1\r\nX-Mock-Reply: $fixture\r\nX-Mock-Chunk: 512\r\n"
       . 'Content-Length: ' . length($body) . "\r\n\r\n$body";

# the provider sends everything at once; the client waits

sleep 2;

my $raw = '';
while (1) {
    my $n = sysread($s, my $buf, 65536);
    last unless $n;
    $raw .= $buf;
}
close $s;

my ($head, $chunked) = split /\r\n\r\n/, $raw, 2;
like($head, qr{^HTTP/1.1 200}, 'slow client: 200');

my $got = '';
while ($chunked =~ s/^([0-9a-fA-F]+)\r\n//) {
    my $len = hex $1;
    last if $len == 0;
    $got .= substr($chunked, 0, $len, '');
    $chunked =~ s/^\r\n//;
}

my $sent = fixture($fixture);

is(length $got, length $sent,
   'slow client: every byte the provider sent, usage event included');
ok($got eq $sent, 'slow client: byte for byte');

my @warn = grep { /client reads slower than the provider/ }
           split /\n/, $t->error_log;
is(scalar @warn, 1, 'slow client: said once');
like($warn[0] // '', qr/\[warn\]/, 'slow client: at warn level');

my $l = $t->log_for('slow1');
is_deeply([ @$l{qw(input output usage_source)} ], [ 19, 177, 'provider' ],
          'slow client: usage still metered exactly');

$t->check_error_log(no_error => 1);

done_testing();
