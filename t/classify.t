#!/usr/bin/perl

# Copyright (C) kroute authors

# Quality gate of the task-type classifier: build/kr-eval (make tools)
# runs the compiled-in weights over the labelled dev prompts, which the
# weights were never trained on, and the figures must not fall below
# those measured when the weights were made.

use strict;
use warnings;

use Test::More;

my $eval = 'build/kr-eval';
my $dev = 't/fixtures/prompts/dev.jsonl';

plan skip_all => "$eval not built (run make tools)" unless -x $eval;

my $out = `$eval -s $dev 2>&1`;
is($?, 0, 'kr-eval runs') or diag($out);

my ($acc, $f1) = $out =~ /^rows \d+ accuracy ([\d.]+) macro-F1 ([\d.]+)$/m;
ok(defined $f1, 'overall figures printed') or diag($out);

cmp_ok($acc, '>=', 0.88, 'dev accuracy >= 0.88');
cmp_ok($f1, '>=', 0.86, 'dev macro-F1 >= 0.86');

my ($syn) = $out =~ /^synthetic: rows \d+ accuracy [\d.]+ macro-F1 ([\d.]+)/m;
my ($real) = $out =~ /^real: +rows \d+ accuracy [\d.]+ macro-F1 ([\d.]+)/m;

cmp_ok($syn, '>=', 0.99, 'synthetic rows macro-F1 >= 0.99');
cmp_ok($real, '>=', 0.75, 'real rows macro-F1 >= 0.75');

for my $task (qw(classification extraction summarization rewrite
    generation qa code reasoning))
{
    my ($tf1) = $out =~ /^\Q$task\E\s+[\d.]+\s+[\d.]+\s+([\d.]+)/m;
    cmp_ok($tf1, '>=', 0.70, "$task F1 >= 0.70");
}

my $bad = `$eval -w t/fixtures/prompts/dev.jsonl $dev 2>&1`;
isnt($?, 0, 'a file that is not weights is refused');
like($bad, qr/bad magic/, 'with a clear error');

done_testing();
