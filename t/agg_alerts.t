#!/usr/bin/perl

# Copyright (C) kroute authors
#
# kroute-agg alerts: cost per request growing faster than usage, provider
# error rate spikes and quality shifts per model, printed one a line or
# as JSON, with --fail turning fired alerts into exit code 1.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Kroute::Redis;

plan skip_all => 'kroute-agg not built' unless -x Kroute::Redis::agg_bin();

require "$FindBin::Bin/fixtures/agg/fixture.pl";

my $r = Kroute::Redis->start;
load_fixture($r);

my @base = ('--redis', '127.0.0.1:' . $r->port, '-c',
    "$FindBin::Bin/fixtures/agg/agg.conf", '--now', '2024-05-10T00');

# the report fixture: acme errors 3 of 6 (prev none), big estimated 8% (0%)
my ($rc, $out, $err) = Kroute::Redis::agg(@base, 'alerts', '--day',
    '2024-05-02');
is($rc, 0, 'alerts without --fail exit 0');
is($out, <<'OUT', 'two alerts');
ALERT estimated_share model=big: share of requests with estimated usage up to 8.00% from 0.00% in the previous window
ALERT provider_error_rate provider=acme: error rate 50.00% (3 of 6 requests) vs 0.00% in the previous window
OUT
is($err, '', 'stderr empty');

($rc) = Kroute::Redis::agg(@base, 'alerts', '--day', '2024-05-02', '--fail');
is($rc, 1, '--fail exits 1 when alerts fire');

($rc, $out) = Kroute::Redis::agg(@base, 'alerts', '--day', '2024-05-02',
    '--format', 'json');
my $j = decode_json($out);
is_deeply([map { "$_->{kind} $_->{subject}" } @{$j->{alerts}}],
    ['estimated_share model=big', 'provider_error_rate provider=acme'],
    'json alerts');
is($j->{from}, '2024-05-02T00:00Z', 'json window');

# cost per request: prev 10 req 0.010 USD, now 10 req 0.013 USD (+30%)
my $dims = [qw(x chat m p c a)];
$r->cmd('SADD', 'cpr:instances', 'w');
$r->add('cpr:{w}:h:2024050105', $dims, { req => 10,
    cost_pusd => 10_000_000_000 });
$r->add('cpr:{w}:h:2024050205', $dims, { req => 10,
    cost_pusd => 13_000_000_000 });
($rc, $out, $err) = Kroute::Redis::agg(@base, '--prefix', 'cpr:', 'alerts',
    '--day', '2024-05-02', '--fail');
is($rc, 1, 'cost per request alert fires');
my $msg = 'cost per request 0.001300 USD vs 0.001000 USD in the previous '
    . 'window (+30.00%), more than the 20.00% allowed';
is($out, "ALERT cost_per_request total: $msg\n"
    . "ALERT cost_per_request feature=x: $msg\n"
    . "ALERT cost_per_request model=m: $msg\n", 'total, feature and model');

# +19%: below the 20% threshold, silence and exit 0 even with --fail
$r->cmd('HINCRBY', 'cpr:{w}:h:2024050205', Kroute::Redis::hfield($dims,
    'cost_pusd'), -1_100_000_000);
($rc, $out, $err) = Kroute::Redis::agg(@base, '--prefix', 'cpr:', 'alerts',
    '--day', '2024-05-02', '--fail');
is($rc, 0, 'no alert exits 0 with --fail');
is($out, '', 'and prints nothing (no cron mail)');
($rc, $out) = Kroute::Redis::agg(@base, '--prefix', 'cpr:', 'alerts',
    '--day', '2024-05-02', '-v');
like($out, qr/^kroute-agg: no alerts for window 2024-05-02T00:00Z/,
    'verbose says there is none');

# error spike against a previous window: 10% now vs 2% before
$r->cmd('SADD', 'err:instances', 'w');
$r->add('err:{w}:h:2024050105', $dims, { req => 100, err => 2 });
$r->add('err:{w}:h:2024050205', $dims, { req => 100, err => 10 });
($rc, $out) = Kroute::Redis::agg(@base, '--prefix', 'err:', 'alerts',
    '--day', '2024-05-02');
like($out, qr/^ALERT provider_error_rate provider=p: error rate 10\.00% \(10 of 100 requests\) vs 2\.00%/m,
    'error spike');
like($out, qr/^ALERT model_error_rate model=m: share of requests with errors up to 10\.00% from 2\.00%/m,
    'model error shift');
# 6% vs 4%: over the 5% floor but not twice the previous rate
$r->cmd('HINCRBY', 'err:{w}:h:2024050105', Kroute::Redis::hfield($dims,
    'err'), 2);
$r->cmd('HINCRBY', 'err:{w}:h:2024050205', Kroute::Redis::hfield($dims,
    'err'), -4);
($rc, $out) = Kroute::Redis::agg(@base, '--prefix', 'err:', 'alerts',
    '--day', '2024-05-02');
is($out, '', 'no spike, no alert');

is_deeply([$r->log_problems], [], 'redis log clean');
$r->stop;

done_testing;
