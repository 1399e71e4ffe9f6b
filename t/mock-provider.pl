#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Command line front end of the mock OpenAI / Anthropic provider used by
# the kroute tests (the server itself lives in t/lib/Kroute/Mock.pm).  Run
# it by hand to poke a gateway:
#
#   perl t/mock-provider.pl --port 9001 --log /tmp/requests.jsonl
#
# then send requests with X-Mock-Reply: <fixture> and friends, see
# Kroute::Mock for the headers it understands.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use Getopt::Long;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Mock;

my %opt = (port => 9001, log => '/dev/null',
           fixtures => Kroute::Mock::fixtures_dir());

GetOptions(\%opt, 'port=i', 'log=s', 'fixtures=s')
    or die "usage: $0 [--port N] [--log FILE] [--fixtures DIR]\n";

$opt{fixtures} = File::Spec->rel2abs($opt{fixtures});

Kroute::Mock::serve(%opt);
