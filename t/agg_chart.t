#!/usr/bin/perl

# Copyright (C) kroute authors
#
# kroute-agg chart: the HTML page with inline SVG opens in headless
# Chromium, whose DOM holds the task-type bars, the feature lines and the
# cohort bars with their plan marks; a screenshot is taken (kept in
# KROUTE_AGG_SHOT_DIR when set, for a person to look at).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use File::Copy qw(copy);
use POSIX qw(_exit);
use Kroute::Redis;

plan skip_all => 'kroute-agg not built' unless -x Kroute::Redis::agg_bin();

my ($chromium) = grep { -x } map { "$_/chromium" } split /:/, $ENV{PATH};
plan skip_all => 'chromium not installed' unless $chromium;

require "$FindBin::Bin/fixtures/agg/fixture.pl";

my $fx = "$FindBin::Bin/fixtures/agg";
my $tmp = tempdir(CLEANUP => 1);
my $r = Kroute::Redis->start;
load_fixture($r);

my @base = ('--redis', '127.0.0.1:' . $r->port, '-c', "$fx/agg.conf",
    '--catalog', "$fx/catalog.conf", '--now', '2024-05-10T00');

sub chromium {
    my (@args) = @_;
    my $profile = tempdir(CLEANUP => 1);
    my $pid = fork // die;
    if ($pid == 0) {
        open STDOUT, '>', "$tmp/dom.html" or die;
        open STDERR, '>', "$tmp/chromium.log" or die;
        exec { $chromium } $chromium, '--headless', '--no-sandbox',
            '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update',
            '--disable-sync', "--user-data-dir=$profile", @args
            or _exit(127);
    }
    my $left = 120;
    while ($left-- > 0) {
        last if waitpid($pid, POSIX::WNOHANG()) == $pid;
        select(undef, undef, undef, 0.5);
    }
    if ($left <= 0) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
        return -1;
    }
    return $? >> 8;
}

my ($rc, $out, $err) = Kroute::Redis::agg(@base, 'chart', '--from',
    '2024-05-01', '--to', '2024-05-03', '-o', "$tmp/report.html");
is($rc, 0, 'chart exits 0');
is($err, '', 'stderr empty');
ok(-s "$tmp/report.html", 'html written');

open my $fh, '<', "$tmp/report.html" or die;
my $html = do { local $/; <$fh> };
unlike($html, qr/<script|https?:\/\/(?!www\.w3\.org)/,
    'self-contained: no script, no external resource');

is(chromium('--dump-dom', "file://$tmp/report.html"), 0, 'dump-dom');
open $fh, '<', "$tmp/dom.html" or die;
my $dom = do { local $/; <$fh> };

my @bars = $dom =~ /<rect class="bar" data-task="([^"]+)" data-cost-micro-usd="(\d+)"/g;
is_deeply(\@bars, [classification => 46084, extraction => 46000,
    generation => 4500], 'one bar per task type, by cost');
my @labels = $dom =~ /<text class="bar-label"[^>]*>([^<]+)</g;
is_deeply(\@labels, [qw(classification extraction generation)],
    'bar labels');
my ($h1) = $dom =~ /data-task="classification"[^>]* height="(\d+)"/;
my ($h3) = $dom =~ /data-task="generation"[^>]* height="(\d+)"/;
is($h1, 220, 'largest bar full height');
is($h3, 21, 'smaller bar scaled: 4500 / 46084 * 220');

my @lines = $dom =~ /<polyline class="line"[^>]* data-feature="([^"]+)" points="([^"]+)"/g;
is(scalar @lines, 4, 'one line per feature');
my %pts = @lines;
my @chat = split / /, $pts{chat};
is(scalar @chat, 48, 'two days: a point per hour') or diag $pts{chat};
like($dom, qr/Cost per feature over time \(per hour\)/, 'hourly title');
like($dom, qr/<text class="legend"[^>]*>chat 0\.050500 USD</,
    'legend with cost');

my @cohorts = $dom =~ /<rect class="cohort-bar" data-cohort="([^"]+)" data-cost-per-user-micro-usd="(\d+)"/g;
# users of 05-02 over a two-day window: a month is 15 windows
is_deeply(\@cohorts, [free => 346260, pro => 258750],
    'cohort bars: cost per user per month');
my @plans = $dom =~ /<line class="plan-line"/g;
is(scalar @plans, 2, 'plan price marks');
like($dom, qr/0\.258750 USD \/ plan 0\.500000/, 'cohort value against plan');
like($dom, qr/id="total-cost">0\.096584 USD</, 'total cost');

is(chromium('--screenshot=' . "$tmp/report.png", '--window-size=900,1300',
    '--hide-scrollbars', "file://$tmp/report.html"), 0, 'screenshot');
ok(-s "$tmp/report.png", 'png written');
open $fh, '<:raw', "$tmp/report.png" or die;
read $fh, my $magic, 8;
is($magic, "\x89PNG\r\n\x1a\n", 'is a png');
if ($ENV{KROUTE_AGG_SHOT_DIR}) {
    copy("$tmp/report.png", "$ENV{KROUTE_AGG_SHOT_DIR}/kroute-agg-chart.png");
}

# a week: a point per day
($rc) = Kroute::Redis::agg(@base, 'chart', '--from', '2024-04-27',
    '--to', '2024-05-04', '-o', "$tmp/week.html");
is($rc, 0, 'weekly chart');
open $fh, '<', "$tmp/week.html" or die;
my $week = do { local $/; <$fh> };
my ($wk) = $week =~ /data-feature="chat" points="([^"]+)"/;
my @wk = split / /, $wk;
is(scalar @wk, 7, 'a week: a point per day');
like($week, qr/per day\)/, 'daily title');

# an empty window still gives a page that says so
($rc, $out, $err) = Kroute::Redis::agg(@base, 'chart', '--day',
    '2024-06-01', '-o', "$tmp/empty.html");
is($rc, 0, 'empty chart exits 0');
like($err, qr/no data in window/, 'said on stderr');
open $fh, '<', "$tmp/empty.html" or die;
like(do { local $/; <$fh> }, qr/id="no-data"/, 'page says no data');

is_deeply([$r->log_problems], [], 'redis log clean');
$r->stop;

done_testing;
