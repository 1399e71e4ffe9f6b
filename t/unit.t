#!/usr/bin/perl

# Copyright (C) kroute authors

# Runs every C unit test binary under build/unit (made by "make unit") as
# a subtest, passing its TAP through, and fails when a binary exits
# non-zero or reports a failure.  KR_UNIT_DIR selects another build
# directory, e.g. build/unit-asan.

use strict;
use warnings;

use Test::More;
use TAP::Parser;

my $dir = $ENV{KR_UNIT_DIR} || 'build/unit';
my @bins = grep { -f $_ && -x _ } sort glob("$dir/test_*");

plan skip_all => "no unit test binaries in $dir (run make unit)"
    unless @bins;

for my $bin (@bins) {
    subtest $bin => sub {
        my $parser = TAP::Parser->new({ exec => [ $bin ] });

        while (my $r = $parser->next) {
            if ($r->is_test) {
                ok($r->is_ok, $r->description);

            } elsif ($r->is_comment) {
                diag($r->as_string);

            } elsif ($r->is_bailout) {
                fail('bail out: ' . $r->explanation);
            }
        }

        ok($parser->tests_run > 0, 'ran tests');
        ok(!$parser->has_problems, 'plan, exit status and results clean')
            or diag('exit ' . $parser->exit . ', wait ' . $parser->wait);
    };
}

done_testing();
