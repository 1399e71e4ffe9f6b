#!/usr/bin/perl

# Copyright (C) kroute authors

# kr-replay (make tools) over a small hand-made traffic file and catalog:
# exact task counts, routed models and expected costs in pico-USD, the
# same figures in the text table, and the error paths (missing files,
# bad options, bad catalog lines named by their line number).

use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

my $replay = 'build/kr-replay';
my $dir = 't/fixtures/replay';
my $catalog = "$dir/catalog.conf";
my $requests = "$dir/requests.jsonl";

plan skip_all => "$replay not built (run make tools)" unless -x $replay;

my $tmp = tempdir(CLEANUP => 1);

# runs kr-replay with a list of arguments, no shell; (status, out, err)

sub run {
    my @args = @_;
    my ($out, $err) = ("$tmp/out", "$tmp/err");

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open(STDOUT, '>', $out) or die;
        open(STDERR, '>', $err) or die;
        exec($replay, @args) or exit(127);
    }

    waitpid($pid, 0);
    my $rc = $? >> 8;

    return ($rc, slurp($out), slurp($err));
}

sub slurp {
    my ($path) = @_;
    open(my $fh, '<', $path) or return '';
    local $/;
    return scalar <$fh>;
}

sub write_file {
    my ($name, $text) = @_;
    my $path = "$tmp/$name";
    open(my $fh, '>', $path) or die "$path: $!";
    print $fh $text;
    close($fh);
    return $path;
}

###############################################################################

# bar 70 over the fixture, JSON output

my ($rc, $out, $err) = run('--catalog', $catalog, '--bar', '70', '--json',
    $requests);
is($rc, 0, 'json: exit 0') or diag($err);
is($err, '', 'json: nothing on stderr');

my $j = eval { decode_json($out) };
ok($j, 'json: parses') or diag($out);

is($j->{lines}, 14, 'non-blank lines');
is($j->{requests}, 12, 'chat requests');
is($j->{routed}, 9, 'routed by alias (auto, or no model given)');
is($j->{pinned}, 2, 'pinned by name and by catalog alias');
is($j->{unknown_model}, 1, 'unknown model');
is($j->{no_model_meets_bar}, 0, 'all routable');
is($j->{invalid_json}, 1, 'invalid JSON counted, not fatal');
is($j->{invalid_request}, 1, 'invalid request counted, not fatal');
is_deeply($j->{bad_lines}, [
    { line => 12, error => '"messages" must be a non-empty array' },
    { line => 13, error => 'not valid JSON' },
], 'bad lines with their numbers');

is_deeply({ map { $_->{task} => $_->{requests} } @{$j->{tasks}} }, {
    classification => 3,    # lines 1, 2, 15
    extraction => 1,        # 3
    summarization => 1,     # 6
    rewrite => 1,           # 9 (pinned)
    generation => 2,        # 8 (pinned), 10 (unknown model)
    qa => 1,                # 11 (no model field)
    code => 2,              # 4, 5
    reasoning => 1,         # 7
}, 'task mix');

is_deeply({ map { $_->{task} => $_->{share_pct} } @{$j->{tasks}} }->{code},
    '16.7', 'task share');

# expected cost per request, pico-USD (input tokens from the estimate:
# (text bytes + 3) / 4 + 4 per message + 3):
#
#   nano  0.1/0.4: classification out 16, extraction out 128
#     1   33 * 100000 + 16 * 400000                 =    9700000
#     2   40 * 100000 + 16 * 400000                 =   10400000
#     3   35 * 100000 + 128 * 400000                =   54700000
#     15  23 * 100000 + 2 * 16 * 400000 (n=2)       =   15100000
#   mini  0.4/1.6
#     4   34 * 400000 + 768 * 1600000 (code)        = 1242400000
#     5   37 * 400000 + 200 * 1600000 (max_tokens)  =  334800000
#     6   74 * 400000 + 256 * 1600000 (summary)     =  439200000
#     7   41 * 400000 + 1024 * 1600000 (reasoning)  = 1654800000
#     8   16 * 400000 + 512 * 1600000 (pinned)      =  825600000
#     9   16 * 400000 + 16 * 1600000 (rewrite=in)   =   32000000
#     11  16 * 400000 + 384 * 1600000 (qa)          =  620800000
#   big   2/8, output_tokens=500 (capped, times n)
#     4066 + 4080 + 4070 + 4068 + 1674 + 4148 + 4082 + 4032 + 4032
#     + 4032 + 8046 (millions)                      = 46330000000

is_deeply([ map { [ $_->{model}, $_->{requests}, $_->{expected_cost_pusd} ] }
    @{$j->{models}} ], [
    [ 'nano', 4, 89900000 ],
    [ 'mini', 7, 5149600000 ],
], 'routed model mix and cost per model');

my $c = $j->{expected_cost};
is($c->{routed_pusd}, 5239500000, 'routed expected cost');
is($c->{routed_usd}, '0.0052395', 'routed in USD');
is($c->{baseline_model}, 'big', 'baseline: dearest output price');
is($c->{baseline_pusd}, 46330000000, 'baseline expected cost');
is($c->{baseline_usd}, '0.04633', 'baseline in USD');
is($c->{saving_pusd}, 41090500000, 'saving');
is($c->{saving_usd}, '0.0410905', 'saving in USD');
is($c->{saving_pct}, '88.7', 'saving percent');

# the same run as a text table

($rc, $out, $err) = run('--catalog', $catalog, '--bar', '70', $requests);
is($rc, 0, 'text: exit 0');
like($out, qr/^classification +3 +25\.0%$/m, 'text: task row');
like($out, qr/^reasoning +1 +8\.3%$/m, 'text: another task row');
like($out, qr/^nano +4 +36\.4% +0\.0000899$/m, 'text: nano row');
like($out, qr/^mini +7 +63\.6% +0\.0051496$/m, 'text: mini row');
unlike($out, qr/^big /m, 'text: big not used');
like($out, qr/^routed +0\.0052395$/m, 'text: routed total');
like($out, qr/^baseline big +0\.04633$/m, 'text: baseline');
like($out, qr/^saving +0\.0410905 +88\.7%$/m, 'text: saving');
like($out, qr/^  line 13: not valid JSON$/m, 'text: bad line listed');

# --explain: one decision per request on stderr

($rc, $out, $err) = run('--catalog', $catalog, '--bar', '70', '--explain',
    $requests);
my $line5 = 'line 5: input=37 task=code bar=70 '
    . 'candidates=mini:0.0003348,big:0.001674 chose=mini out=200';
like($err, qr/^\Q$line5\E$/m, 'explain: max_tokens caps both candidates');
like($err, qr/^line 9: input=16 task=rewrite pinned=mini cost=0\.000032$/m,
    'explain: pinned by alias');
like($err, qr/^line 10: .*unknown model "gpt-unknown"$/m,
    'explain: unknown model');

# a higher bar leaves only big for most tasks; an explicit baseline

($rc, $out) = run('--catalog', $catalog, '--bar', '95', '--json',
    '--baseline', 'nano', $requests);
$j = decode_json($out);
is($j->{no_model_meets_bar}, 9, 'bar 95: nothing routable');
is($j->{expected_cost}{routed_pusd}, 825600000 + 32000000,
    'bar 95: pinned requests only');
is($j->{expected_cost}{baseline_model}, 'nano', 'explicit baseline');
is($j->{expected_cost}{baseline_pusd},
    16 * 100000 + 512 * 400000 + 16 * 100000 + 16 * 400000,
    'baseline nano for the pinned requests');
is($j->{expected_cost}{saving_usd}, '-0.0006432', 'negative saving');
is($j->{expected_cost}{saving_pct}, '-300.0', 'negative saving percent');

# bar 80: classification stays on nano (80), extraction (70) moves up

($rc, $out) = run('--catalog', $catalog, '--bar', '80', '--json',
    $requests);
$j = decode_json($out);
is_deeply([ map { [ $_->{model}, $_->{requests} ] } @{$j->{models}} ], [
    [ 'nano', 3 ], [ 'mini', 2 ], [ 'big', 6 ],
], 'bar 80: model mix');

###############################################################################

# error paths: exit 2 with a clear message

($rc, $out, $err) = run('--catalog', $catalog, "$tmp/missing.jsonl");
is($rc, 2, 'missing requests: exit 2');
like($err, qr/cannot open requests ".*missing\.jsonl": No such file/,
    'missing requests: message');

($rc, $out, $err) = run('--catalog', "$tmp/missing.conf", $requests);
is($rc, 2, 'missing catalog: exit 2');
like($err, qr/cannot open catalog ".*missing\.conf"/, 'missing catalog');

($rc, $out, $err) = run($requests);
is($rc, 2, 'no catalog option: exit 2');
like($err, qr/--catalog FILE is required/, 'no catalog option: message');

($rc, $out, $err) = run('--catalog', $catalog, '--bar', '101', $requests);
is($rc, 2, 'bar 101: exit 2');
like($err, qr/--bar "101" is not a number from 0 to 100/, 'bar message');

($rc, $out, $err) = run('--catalog', $catalog, '--baseline', 'gpt-9',
    $requests);
is($rc, 2, 'unknown baseline: exit 2');
like($err, qr/baseline model "gpt-9" is not in the catalog/,
    'unknown baseline: message');

($rc, $out, $err) = run('--catalog', $catalog, '--frobnicate', $requests);
is($rc, 2, 'unknown option: exit 2');

my @bad = (
    [ "http {\n    kroute_model a provider=p input=1 output=2;\n"
      . "    kroute_model b provider=p\n        input=0.1234567 output=2;\n}\n",
      qr/:4: invalid price "input=0\.1234567"/, 'bad price on line 4' ],
    [ "\n\nkroute_model a provider=p input=1 output=2 speed=fast;\n",
      qr/:3: invalid kroute_model parameter "speed=fast"/,
      'unknown parameter on line 3' ],
    [ "# models\nkroute_model a provider=p input=1 output=2\n"
      . "    quality=code:50,poetry:3;\n",
      qr/:3: unknown task type "poetry"/, 'unknown task on line 3' ],
    [ "kroute_model a provider=p input=1 output=2 quality=code:101;\n",
      qr/:1: invalid quality "quality=code:101"/, 'score over 100' ],
    [ "kroute_model a input=1\n  output=2;\n",
      qr/:1: model "a" needs provider=, input= and output=/,
      'missing provider' ],
    [ "kroute_model a provider=p input=1 output=2;\n"
      . "kroute_model a provider=p input=1 output=2;\n",
      qr/:2: duplicate model "a"/, 'duplicate model' ],
    [ "kroute_model a provider=p input=1 output=2 output_tokens=0;\n",
      qr/:1: invalid output_tokens "output_tokens=0"/, 'output_tokens 0' ],
    [ "kroute_zone kroute:1m;\n",
      qr/no kroute_model in the catalog/, 'no model' ],
);

my $n = 0;

for my $case (@bad) {
    my ($text, $re, $name) = @$case;
    my $path = write_file('bad' . $n++ . '.conf', $text);

    ($rc, $out, $err) = run('--catalog', $path, $requests);
    is($rc, 2, "$name: exit 2");
    like($err, $re, "$name: message");
    is($out, '', "$name: no report");
}

done_testing();
