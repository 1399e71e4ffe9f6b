#!/usr/bin/perl

# Copyright (C) kroute authors
#
# kroute-agg report: exact costs, tokens, requests, per-user numbers,
# growth, plan-price comparison and cheap-able savings against the
# hand-computed fixture, in text, JSON and CSV, before and after rollup.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Kroute::Redis;

plan skip_all => 'kroute-agg not built' unless -x Kroute::Redis::agg_bin();

require "$FindBin::Bin/fixtures/agg/fixture.pl";

my $fx = "$FindBin::Bin/fixtures/agg";
my $r = Kroute::Redis->start;
load_fixture($r);

my @base = ('--redis', '127.0.0.1:' . $r->port, '-c', "$fx/agg.conf",
    '--catalog', "$fx/catalog.conf", '--now', '2024-05-10T00');

sub report {
    my ($rc, $out, $err) = Kroute::Redis::agg(@base, 'report', @_);
    is($rc, 0, "report @_ exits 0");
    is($err, '', "report @_ prints nothing on stderr");
    return $out;
}

sub rows_by {
    my ($rows, $key) = @_;
    return { map { $_->{$key} => $_ } @$rows };
}

my $json = report('--day', '2024-05-02', '--format', 'json');
my $j = decode_json($json);
my $t = $j->{tables};
my $s = $t->{summary};

is($j->{empty}, JSON::PP::false, 'not empty');
is($j->{window}{from}, '2024-05-02T00:00Z', 'window from');
is($j->{window}{previous_from}, '2024-05-01T00:00Z', 'previous window');

# totals: 30e9 + 23e9 + 4.5e9 + 0.084e9 pico-USD
is($s->{requests}, 35, 'total requests');
is($s->{errors}, 4, 'total errors');
is($s->{input_tokens}, 5100, 'total input tokens');
is($s->{output_tokens}, 1560, 'total output tokens');
is($s->{cached_tokens}, 400, 'total cached tokens');
is($s->{cost_micro_usd}, 57584, 'total cost micro-USD');
is($s->{cost_usd}, '0.057584', 'total cost USD');
is($s->{cost_per_request_usd}, '0.001645', 'cost per request');
is($s->{prev_cost_usd}, '0.039000', 'previous cost');
is($s->{prev_requests}, 15, 'previous requests');
is($s->{cost_growth_bp}, 4765, 'cost growth 18.584/39');
is($s->{requests_growth_bp}, 13333, 'requests growth 20/15');
is($s->{active_users}, 3, 'active users');
is($s->{cheapable_cost_usd}, '0.053084', 'cheap-able cost');
is($s->{cheapable_share_bp}, 9219, 'cheap-able share');
is($s->{potential_saving_usd}, '0.050260', 'potential saving');
is($s->{potential_saving_micro_usd}, 50260, 'potential saving micro');

my $f = rows_by($t->{by_feature}, 'feature');
is($f->{chat}{cost_usd}, '0.034500', 'chat cost');
is($f->{chat}{requests}, 24, 'chat requests');
is($f->{chat}{share_bp}, 5991, 'chat share');
is($f->{chat}{cost_growth_bp}, 11563, 'chat growth 18.5/16 rounded up');
is($f->{chat}{avg_latency_ms}, 500, 'chat latency');
is($f->{search}{cost_micro_usd}, 23084, 'search cost');
is($f->{search}{cost_growth_bp}, 37, 'search growth');
is($f->{search}{avg_latency_ms}, 282, 'search latency 3100/11');
is($t->{by_feature}[0]{feature}, 'chat', 'features sorted by cost');

my $tk = rows_by($t->{by_task}, 'task');
is($tk->{classification}{cost_usd}, '0.030084', 'classification cost');
is($tk->{classification}{cost_growth_bp}, 8803, 'classification growth');
is($tk->{extraction}{cost_growth_bp}, 0, 'extraction unchanged');
is($tk->{generation}{cost_growth_bp}, undef, 'generation is new');
is($tk->{generation}{share_bp}, 781, 'generation share');

my $m = rows_by($t->{by_model}, 'model');
is($m->{big}{cost_usd}, '0.053000', 'big cost');
is($m->{tiny}{cost_micro_usd}, 84, 'tiny cost');
is($m->{big}{cost_growth_bp}, 3590, 'big growth');

my $p = rows_by($t->{by_provider}, 'provider');
is($p->{openai}{cost_usd}, '0.057500', 'openai cost');
is($p->{acme}{errors}, 3, 'acme errors');

my $c = rows_by($t->{by_cohort}, 'cohort');
is($c->{pro}{cost_usd}, '0.034500', 'pro cohort cost');
is($c->{free}{cost_usd}, '0.023084', 'free cohort cost');

my $a = rows_by($t->{by_agent}, 'agent');
is($a->{''}{cost_usd}, '0.034500', 'no agent cost');
is($a->{agent1}{requests}, 11, 'agent1 requests');

my $q = rows_by($t->{quality}, 'model');
is($q->{big}{estimated_share_bp}, 800, 'big estimated share');
is($q->{big}{error_rate_bp}, 400, 'big error rate');
is($q->{tiny}{unparsed_share_bp}, 1667, 'tiny unparsed share');

my $u = rows_by($t->{by_user}, 'user');
is($u->{alice}{cost_usd}, '0.024500', 'alice cost');
is($u->{alice}{requests}, 14, 'alice requests');
is($u->{alice}{cost_growth_bp}, 5313, 'alice growth');
is($u->{bob}{cost_usd}, '0.010000', 'bob cost');
is($u->{bob}{cost_growth_bp}, undef, 'bob is new');
is($u->{carol}{share_bp}, 4009, 'carol share');

my $fpu = rows_by($t->{feature_per_user}, 'feature');
is($fpu->{chat}{active_users}, 2, 'chat users');
is($fpu->{chat}{cost_per_user_usd}, '0.017250', 'chat cost per user');
is($fpu->{chat}{prev_cost_per_user_usd}, '0.016000', 'chat prev per user');
is($fpu->{chat}{cost_per_user_growth_bp}, 781, 'chat per-user growth');
is($fpu->{search}{cost_per_user_usd}, '0.023084', 'search per user');

my $cpu = rows_by($t->{cohort_per_user}, 'cohort');
is($cpu->{pro}{active_users}, 2, 'pro users');
is($cpu->{pro}{cost_per_user_usd}, '0.017250', 'pro cost per user');
is($cpu->{pro}{cost_per_user_month_usd}, '0.517500', 'pro month (x30)');
is($cpu->{pro}{plan_price_usd}, '0.500000', 'pro plan price');
is($cpu->{pro}{margin_per_user_month_usd}, '-0.017500', 'pro margin');
is($cpu->{pro}{margin_per_user_month_micro_usd}, -17500, 'pro margin micro');
is($cpu->{pro}{plan_used_bp}, 10350, 'pro uses 103.5% of the plan');
is($cpu->{pro}{status}, 'over plan', 'pro user costs more than the plan');
is($cpu->{free}{cost_per_user_month_usd}, '0.692520', 'free month');
is($cpu->{free}{margin_per_user_month_usd}, '0.307480', 'free margin');
is($cpu->{free}{status}, 'ok', 'free within plan');

my $ch = rows_by($t->{cheapable}, 'task');
is($ch->{classification}{cheapest_model}, 'tiny', 'classification -> tiny');
is($ch->{classification}{routed_cost_usd}, '0.000424', 'routed cost');
is($ch->{classification}{saving_usd}, '0.029660', 'classification saving');
is($ch->{classification}{saving_share_bp}, 9859, 'saving share');
is($ch->{classification}{share_of_total_bp}, 5224, 'share of spend');
is($ch->{extraction}{cheapest_model}, 'mid', 'extraction bar excludes tiny');
is($ch->{extraction}{routed_cost_usd}, '0.002400', 'extraction routed');
is($ch->{extraction}{saving_usd}, '0.020600', 'extraction saving');
ok(!exists $ch->{generation}, 'generation is not cheap-able');

# text: aligned tables with the same numbers
my $text = report('--day', '2024-05-02');
like($text, qr/^kroute report 2024-05-02T00:00Z \.\. 2024-05-03T00:00Z/,
    'text header');
like($text, qr/^  cost_usd {15}0\.057584$/m, 'text total cost');
like($text, qr/^  cost_growth {12}\+47\.65%$/m, 'text growth');
like($text, qr/^  chat +24 +1 +2500 +1400 +400 0\.034500 59\.91% +0\.016000 +\+115\.63% +\+140\.00% +500$/m,
    'text feature row');
like($text, qr/^  pro +2 0\.034500 +0\.017250 +0\.517500 +0\.500000 +-0\.017500 +103\.50% over plan$/m,
    'text plan row');
like($text, qr/^  generation +4 +0 +500 +1000 +0 0\.004500 +7\.81% +0\.000000 +new +new +1000$/m,
    'text new row');
like($text, qr/^  \(none\) +24 /m, 'empty dimension printed as (none)');
my @hdr = grep { /^  feature requests/ } split /\n/, $text;
my @row = grep { /^  chat +24/ } split /\n/, $text;
is(length($hdr[0]), length($row[0]), 'columns aligned');

# csv
my $csv = report('--day', '2024-05-02', '--format', 'csv',
    '--table', 'cheapable');
is($csv, <<'CSV', 'csv table');
table,task,requests,cost_usd,share_of_total,cheapest_model,routed_cost_usd,saving_usd,saving_share
cheapable,classification,26,0.030084,52.24%,tiny,0.000424,0.029660,98.59%
cheapable,extraction,5,0.023000,39.94%,mid,0.002400,0.020600,89.57%
CSV
my $all = report('--day', '2024-05-02', '--format', 'csv');
like($all, qr/^by_user,alice,14,1500,150,0\.024500,42\.55%,0\.016000,\+53\.13%$/m,
    'csv user row');
my @blocks = split /\n\n/, $all;
is(scalar @blocks, 12, 'csv has one block per table');

# an hour window: raw hours, growth against the hour before
my $hj = decode_json(report('--from', '2024-05-02T11', '--to',
    '2024-05-02T12', '--format', 'json'));
is($hj->{tables}{summary}{cost_usd}, '0.020584', 'hour cost');
is($hj->{tables}{summary}{requests}, 20, 'hour requests');
is($hj->{tables}{summary}{prev_cost_usd}, '0.037000', 'previous hour');
is($hj->{tables}{summary}{cost_growth_bp}, -4437, 'negative growth');
is_deeply($hj->{tables}{by_user}, [], 'no whole day, no user rows');
like($hj->{notes}[0], qr/no whole UTC day/, 'says why');

# --last from --to
my $lj = decode_json(report('--last', '2d', '--to', '2024-05-03',
    '--format', 'json'));
is($lj->{tables}{summary}{cost_usd}, '0.096584', 'two days');

# after rollup (raw buckets expire at --now) the report is the same
my ($rc) = Kroute::Redis::agg(@base, 'rollup');
is($rc, 0, 'rollup');
is($r->cmd('EXISTS', 'kroute:{web1}:h:2024050210'), 0, 'raw hours expired');
my $after = report('--day', '2024-05-02', '--format', 'json');
is_deeply(decode_json($after), $j, 'same report from the day rollup');
my $text2 = report('--day', '2024-05-02');
is($text2, $text, 'same text from the day rollup');

my $hj2 = decode_json(report('--from', '2024-05-02T11', '--to',
    '2024-05-02T12', '--format', 'json'));
like(join(' ', @{$hj2->{notes}}), qr/raw buckets expired/,
    'expired hours are reported');

is_deeply([$r->log_problems], [], 'redis log clean');
$r->stop;

done_testing;
