#!/usr/bin/perl

# Copyright (C) kroute authors
#
# kroute-agg rollup: day and month totals equal the sum of the raw hour
# buckets of all instances; running it twice or concurrently changes
# nothing; raw buckets expire after the retention, only together with
# the final total they were folded into; late buckets are merged once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use POSIX qw(_exit);
use Kroute::Redis;

plan skip_all => 'kroute-agg not built' unless -x Kroute::Redis::agg_bin();

require "$FindBin::Bin/fixtures/agg/fixture.pl";

my $r = Kroute::Redis->start;
load_fixture($r);

my @base = ('--redis', '127.0.0.1:' . $r->port, '-c',
    "$FindBin::Bin/fixtures/agg/agg.conf");

sub rollup {
    my ($now, @more) = @_;
    my ($rc, $out, $err) = Kroute::Redis::agg(@base, '--now', $now,
        'rollup', @more);
    is($rc, 0, "rollup at $now exits 0");
    is($err, '', "rollup at $now: stderr empty");
    return $out;
}

# every rollup key, meta without the time it was written
sub snapshot {
    my %s;
    for my $k (@{$r->cmd('KEYS', 'kroute:{agg}:*')}) {
        my $h = $r->hgetall($k);
        delete $h->{rolled_at};
        $s{$k} = $h;
    }
    return \%s;
}

sub concurrently {
    my ($n, @args) = @_;
    my @pids;
    for (1 .. $n) {
        my $pid = fork // die;
        if ($pid == 0) {
            my ($rc) = Kroute::Redis::agg(@base, @args);
            _exit($rc);
        }
        push @pids, $pid;
    }
    my @rc;
    for (@pids) { waitpid($_, 0); push @rc, $? >> 8 }
    return @rc;
}

my $A = Kroute::Redis::hfield([qw(chat classification big openai pro)], '');
$A =~ s/\|\z//;

# 2024-05-04T00: 05-01 is final (48h after its end), 05-02 is not
is(rollup('2024-05-04T00', '-v'), <<'OUT', 'verbose rollup says what it did');
rolled 20240501: 24 hours, 3 buckets, final
rolled 20240502: 24 hours, 9 buckets
rolled month 202405
OUT

my $d = $r->hgetall('kroute:{agg}:d:20240502');
is($d->{"$A|req"}, 20, 'day requests of A over two instances');
is($d->{"$A|cost_pusd"}, 30_000_000_000, 'day cost of A');
is($d->{"$A|cached"}, 400, 'day cached tokens of A');
is($d->{"$A|lat_ms"}, 8000, 'day latency sum of A');
my $sum = 0;
$sum += $d->{$_} for grep { /\|cost_pusd\z/ } keys %$d;
is($sum, 57_584_000_000, 'day cost total');
is(scalar(keys %$d), 25, 'one field per raw counter (8+5+5+7)');

my $ud = $r->hgetall('kroute:{agg}:ud:20240502');
is($ud->{'alice|cost_pusd'}, 24_500_000_000, 'user day merged');
is($ud->{'alice|req'}, 14, 'user day requests');
my $ufd = $r->hgetall('kroute:{agg}:ufd:20240502');
is($ufd->{"alice\x1fchat|cost_pusd"}, 24_500_000_000, 'user feature day');
my $ucd = $r->hgetall('kroute:{agg}:ucd:20240502');
is($ucd->{"carol\x1ffree|req"}, 16, 'user cohort day');

my $mo = $r->hgetall('kroute:{agg}:m:202405');
$sum = 0;
$sum += $mo->{$_} for grep { /\|cost_pusd\z/ } keys %$mo;
is($sum, 96_584_000_000, 'month total = both days');
is($mo->{"$A|req"}, 30, 'month requests of A');

my $meta1 = $r->hgetall('kroute:{agg}:meta:d:20240501');
my $meta2 = $r->hgetall('kroute:{agg}:meta:d:20240502');
is($meta1->{final}, 1, '05-01 final');
is($meta2->{final}, 0, '05-02 not final yet');
ok(!$meta1->{expired}, '05-01 raw kept within retention');
is($meta2->{instances}, 2, 'instances counted');
is($r->cmd('EXISTS', 'kroute:{web1}:h:2024050112'), 1, 'raw hour kept');

# twice: nothing changes
my $s1 = snapshot();
rollup('2024-05-04T00');
is_deeply(snapshot(), $s1, 'second run changes nothing');

# concurrently: same totals, no temporary keys left
my @rc = concurrently(4, '--now', '2024-05-04T00', 'rollup');
is_deeply(\@rc, [0, 0, 0, 0], 'four concurrent runs exit 0');
is_deeply(snapshot(), $s1, 'concurrent runs converge on the same totals');
is_deeply($r->cmd('KEYS', '*tmp*'), [], 'no temporary keys left');

# a late delta for an open day is picked up by the next run
$r->add('kroute:{web1}:h:2024050210', [qw(chat classification big openai pro)],
    { cost_pusd => 1_000_000_000 });
rollup('2024-05-04T00');
is($r->hgetall('kroute:{agg}:d:20240502')->{"$A|cost_pusd"},
    31_000_000_000, 'late delta of an open day rolled');
$r->cmd('HINCRBY', 'kroute:{web1}:h:2024050210', "$A|cost_pusd",
    -1_000_000_000);
rollup('2024-05-04T00');
is_deeply(snapshot(), $s1, 'back to the same totals');

# the open hour is not rolled
$r->add('kroute:{web1}:h:2024050300', [qw(chat)], { req => 1 });
rollup('2024-05-03T00');
is($r->cmd('EXISTS', 'kroute:{agg}:d:20240503'), 0, 'open hour left alone');
$r->cmd('DEL', 'kroute:{web1}:h:2024050300');
rollup('2024-05-04T00');

# retention 7d: at 05-09T00 the raw buckets of 05-01 go, 05-02 stays
my $d1 = $r->hgetall('kroute:{agg}:d:20240501');
rollup('2024-05-09T00');
is($r->cmd('EXISTS', 'kroute:{web1}:h:2024050112'), 0, '05-01 hour expired');
is($r->cmd('EXISTS', 'kroute:{web1}:ud:20240501'), 0, '05-01 users expired');
is($r->cmd('EXISTS', 'kroute:{web1}:ufd:20240501'), 0, '05-01 ufd expired');
is($r->cmd('EXISTS', 'kroute:{web1}:h:2024050210'), 1, '05-02 hour kept');
is_deeply($r->hgetall('kroute:{agg}:d:20240501'), $d1,
    'expiry kept the rolled total');
is($r->hgetall('kroute:{agg}:meta:d:20240501')->{expired}, 1, 'marked');
is($r->hgetall('kroute:{agg}:meta:d:20240502')->{final}, 1,
    '05-02 final now');

my ($rc, $out) = Kroute::Redis::agg(@base, '--now', '2024-05-09T00',
    'report', '--day', '2024-05-01', '--format', 'csv', '--table',
    'summary');
like($out, qr/^summary,2024-05-01T00:00Z,2024-05-02T00:00Z,24,15,0,3000,300,0,0,0\.039000,/m,
    'report of an expired day from its total');

# a late bucket for an expired day is added once and removed
$r->add('kroute:{web2}:h:2024050113', [qw(chat classification big openai pro)],
    { req => 1, cost_pusd => 2_000_000_000 });
$r->add('kroute:{web2}:ud:20240501', 'alice', { req => 1,
    cost_pusd => 2_000_000_000 });
@rc = concurrently(3, '--now', '2024-05-09T00', 'rollup');
is_deeply(\@rc, [0, 0, 0], 'concurrent late merge runs exit 0');
my $late = $r->hgetall('kroute:{agg}:d:20240501');
is($late->{"$A|cost_pusd"}, 18_000_000_000, 'late cost merged once');
is($late->{"$A|req"}, 11, 'late requests merged once');
is($r->hgetall('kroute:{agg}:ud:20240501')->{'alice|cost_pusd'},
    18_000_000_000, 'late user bucket merged once');
is($r->cmd('EXISTS', 'kroute:{web2}:h:2024050113'), 0, 'late bucket gone');
my $s2 = snapshot();
rollup('2024-05-09T00');
is_deeply(snapshot(), $s2, 'nothing more to merge');
$sum = 0;
$mo = $r->hgetall('kroute:{agg}:m:202405');
$sum += $mo->{$_} for grep { /\|cost_pusd\z/ } keys %$mo;
is($sum, 98_584_000_000, 'month follows the late merge');

# a bigger day, rolled by five runs at once, equals the sum in Perl
srand(7);
my (%want, $cnt);
for my $h (0 .. 23) {
    for my $i (qw(web1 web2)) {
        my $key = sprintf('kroute:{%s}:h:20240420%02d', $i, $h);
        my @args;
        for my $n (1 .. 15) {
            my $dims = join("\x1f", "f$n", 'chat', 'm' . ($n % 3), 'p',
                'c' . ($n % 2), '');
            for my $metric (qw(req in out cost_pusd)) {
                my $v = 1 + int(rand(1_000_000)) * ($metric eq 'cost_pusd'
                    ? 1_000_003 : 1);
                $want{"$dims|$metric"} += $v;
                push @args, "$dims|$metric", $v;
                $cnt++;
            }
        }
        $r->cmd('HSET', $key, @args);
    }
}
@rc = concurrently(5, '--now', '2024-04-25T00', 'rollup');
is_deeply(\@rc, [0, 0, 0, 0, 0], 'five concurrent runs over a big day');
is_deeply($r->hgetall('kroute:{agg}:d:20240420'), \%want,
    "big day equals the sum of $cnt counters");
rollup('2024-04-25T00');
is_deeply($r->hgetall('kroute:{agg}:d:20240420'), \%want, 'and stays so');
is_deeply($r->cmd('KEYS', '*tmp*'), [], 'no temporary keys left');

# expiry by several runs at once loses nothing
@rc = concurrently(4, '--now', '2024-04-28T00', 'rollup');
is_deeply(\@rc, [0, 0, 0, 0], 'concurrent expiry runs');
is_deeply($r->cmd('KEYS', 'kroute:{web*}:h:202404*'), [], 'raw expired');
is_deeply($r->hgetall('kroute:{agg}:d:20240420'), \%want,
    'total intact after concurrent expiry');

is_deeply([$r->log_problems], [], 'redis log clean');
$r->stop;

done_testing;
