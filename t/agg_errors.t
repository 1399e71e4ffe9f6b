#!/usr/bin/perl

# Copyright (C) kroute authors
#
# kroute-agg errors and exit codes for cron: Redis unreachable (closed
# port, a server that never answers), bad windows, bad config and
# catalog, Redis command errors, unwritable output, and an empty window,
# which is said and exits 0.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use Kroute::Redis;

plan skip_all => 'kroute-agg not built' unless -x Kroute::Redis::agg_bin();

my $tmp = tempdir(CLEANUP => 1);
my $fx = "$FindBin::Bin/fixtures/agg";

sub agg { Kroute::Redis::agg(@_) }

sub write_file {
    my ($name, $text) = @_;
    open my $fh, '>', "$tmp/$name" or die;
    print $fh $text;
    close $fh;
    return "$tmp/$name";
}

# unreachable: a closed loopback port
my $closed = Kroute::Redis::free_port();
for my $cmd (qw(report rollup chart alerts)) {
    my ($rc, $out, $err) = agg('--redis', "127.0.0.1:$closed", $cmd);
    is($rc, 4, "$cmd: unreachable redis exits 4");
    like($err, qr/^kroute-agg: cannot connect to redis at 127\.0\.0\.1:$closed: Connection refused$/m,
        "$cmd: says why");
    is($out, '', "$cmd: nothing on stdout");
}

# a listener that never answers: the command timeout fires
my $mute = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
    Listen => 5, Proto => 'tcp') or die;
my $t0 = time;
my ($rc, $out, $err) = agg('--redis', '127.0.0.1:' . $mute->sockport,
    '--timeout', '300', 'report');
is($rc, 4, 'silent server exits 4');
like($err, qr/does not answer/, 'says the server does not answer');
ok(time - $t0 < 10, 'within the timeout');
close $mute;

my $r = Kroute::Redis->start;
my @base = ('--redis', '127.0.0.1:' . $r->port, '--now', '2024-05-10T00');

# bad windows: exit 2, before touching redis
for my $w (
    [ ['--from', '2024-05-03', '--to', '2024-05-02'], qr/start is not before end/ ],
    [ ['--from', '2024-05-02', '--to', '2024-05-02'], qr/start is not before end/ ],
    [ ['--day', '2024-02-30'], qr/cannot parse --day "2024-02-30"/ ],
    [ ['--day', '2024-13-01'], qr/cannot parse --day/ ],
    [ ['--from', 'yesterday'], qr/cannot parse --from "yesterday"/ ],
    [ ['--last', '0h'], qr/cannot parse --last "0h"/ ],
    [ ['--last', '5x'], qr/cannot parse --last "5x"/ ],
    [ ['--last', '401d'], qr/longer than 400 days/ ],
    [ ['--to', '2024-05-02'], qr/--to needs --from or --last/ ],
    [ ['--day', '2024-05-01', '--last', '1d'], qr/use one of/ ],
    [ ['--month', '2024-5'], qr/cannot parse --month/ ],
) {
    my ($args, $re) = @$w;
    ($rc, $out, $err) = agg(@base, 'report', @$args);
    is($rc, 2, "bad window @$args exits 2");
    like($err, qr/kroute-agg: bad window: /, "@$args: bad window named");
    like($err, $re, "@$args: reason");
}

($rc, $out, $err) = agg(@base, 'report', '--month', '2024-12',
    '--format', 'json');
is($rc, 0, 'december window is fine');
is(decode_json($out)->{window}{to}, '2025-01-01T00:00Z', 'december ends');

# usage errors
($rc, $out, $err) = agg(@base, 'frobnicate');
is($rc, 2, 'unknown command exits 2');
like($err, qr/unknown command "frobnicate"/, 'says so');
($rc, $out, $err) = agg(@base, 'report', '--colour');
is($rc, 2, 'unknown option exits 2');
($rc, $out, $err) = agg(@base, 'report', '--format', 'xml');
is($rc, 2, 'unknown format exits 2');
($rc, $out, $err) = agg('report');
($rc, $out, $err) = agg(@base);
is($rc, 2, 'no command exits 2');
($rc, $out, $err) = agg(@base, '--now', 'later', 'report');
is($rc, 2, 'bad --now exits 2');
($rc, $out, $err) = agg('--redis', 'nohostport', 'report');
is($rc, 2, 'bad --redis exits 2');

# config and catalog errors: exit 3
my $bad = write_file('bad.conf', "retention 7d\nfrobnicate 1\n");
($rc, $out, $err) = agg(@base, '-c', $bad, 'report');
is($rc, 3, 'unknown directive exits 3');
like($err, qr/unknown directive "frobnicate" in \Q$bad\E:2/, 'with line');
$bad = write_file('bad2.conf', "plan pro ten\n");
($rc, $out, $err) = agg(@base, '-c', $bad, 'report');
is($rc, 3, 'bad plan price exits 3');
like($err, qr/invalid value in "plan"/, 'says which');
$bad = write_file('bad3.conf', "retention 1d\nfinal_after 2d\n");
($rc, $out, $err) = agg(@base, '-c', $bad, 'rollup');
is($rc, 3, 'retention shorter than final_after exits 3');
($rc, $out, $err) = agg(@base, '-c', "$tmp/missing.conf", 'report');
is($rc, 3, 'missing config exits 3');
like($err, qr/cannot open config/, 'says so');
my $cat = write_file('cat.conf', "kroute_model x provider=p input=1.1234567 output=1;\n");
($rc, $out, $err) = agg(@base, '--catalog', $cat, 'report');
is($rc, 3, 'price with 7 decimals exits 3');
like($err, qr/invalid "kroute_model" in catalog \Q$cat\E:1/, 'with line');
$cat = write_file('cat2.conf', "kroute_model x provider=p input=1 output=1\n");
($rc, $out, $err) = agg(@base, '--catalog', $cat, 'report');
is($rc, 3, 'unterminated statement exits 3');

# empty data: said, exit 0
($rc, $out, $err) = agg(@base, 'report', '--day', '2024-06-01');
is($rc, 0, 'empty window exits 0');
is($out, "kroute-agg: no data in window 2024-06-01T00:00Z .. 2024-06-02T00:00Z\n",
    'empty window said on stdout');
is($err, '', 'nothing on stderr');
($rc, $out, $err) = agg(@base, 'report', '--day', '2024-06-01',
    '--format', 'json');
is($rc, 0, 'empty json exits 0');
my $j = decode_json($out);
ok($j->{empty}, 'json says empty');
is($j->{message}, 'no data in window', 'json message');
($rc, $out, $err) = agg(@base, 'report', '--format', 'csv');
is($rc, 0, 'empty csv exits 0');
is($out, '', 'empty csv has no rows');
like($err, qr/no data in window/, 'said on stderr');
($rc, $out, $err) = agg(@base, 'alerts');
is($rc, 0, 'empty alerts exits 0');
like($out, qr/no data in window 2024-05-09T00:00Z/, 'default: previous day');
($rc, $out, $err) = agg(@base, 'rollup');
is($rc, 0, 'rollup of nothing exits 0');
is($out . $err, '', 'silently');

# unwritable output: exit 6
($rc, $out, $err) = agg(@base, 'report', '-o', "$tmp/no/such/dir/r.txt");
is($rc, 6, 'unwritable output exits 6');
like($err, qr/cannot write/, 'says so');

# output file written whole
($rc, $out, $err) = agg(@base, 'report', '--format', 'json',
    '-o', "$tmp/r.json");
is($rc, 0, 'output file');
ok(-s "$tmp/r.json", 'written');
is_deeply([glob "$tmp/r.json.tmp*"], [], 'no temporary file left');

# redis command errors: exit 5
$r->cmd('SET', 'kroute:instances', 'not a set');
($rc, $out, $err) = agg(@base, 'report');
is($rc, 5, 'wrong type exits 5');
like($err, qr/redis SMEMBERS failed: WRONGTYPE/, 'says which command');
$r->cmd('DEL', 'kroute:instances');
$r->cmd('SADD', 'kroute:instances', 'agg');
($rc, $out, $err) = agg(@base, 'rollup');
is($rc, 5, 'reserved instance name exits 5');
like($err, qr/instance name "agg" is reserved/, 'says so');

is_deeply([$r->log_problems], [], 'redis log clean');
$r->stop;

done_testing;
