#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Configuration: a catalog using every kroute directive passes nginx -t,
# and every bad directive value fails it at [emerg] with the bad value
# quoted, so that a typo in a price or a provider never reaches traffic.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use Test::More;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);

require_module();

my %files = ('openai.key' => "sk-test-config\n",
             'anthropic.key' => "sk-ant-test-config\n",
             'empty.key' => '');

# a catalog and locations using every directive, with %%CATALOG%%,
# %%LOCATION%% and %%EXTRA%% slots for the bad value under test

my $good_catalog = <<'EOF';
    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;
    kroute_provider anthropic url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/anthropic.key format=anthropic;
    kroute_model small provider=openai input=0.05 output=0.4 cached=0.005
                 quality=default:40,code:60 alias=small-latest,tiny
                 output_tokens=200;
    kroute_model big provider=openai input=1.25 output=10 cached=0.125
                 cache_write=1.5 quality=default:90;
    kroute_model claude provider=anthropic input=3 output=15 cached=0.3
                 cache_write=3.75;
EOF

sub conf {
    my (%a) = @_;
    my $catalog = defined $a{catalog} ? $a{catalog} : $good_catalog;
    my $zone = defined $a{zone} ? $a{zone} : 'kroute_zone kroute:1m;';
    my $loc = $a{location} || '';
    return <<"EOF";
    $zone
$catalog
    $a{http}

    kroute_feature \$http_x_feature;
    kroute_user \$http_x_user;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /v1/chat/completions {
            kroute on;
            kroute_route_alias auto;
            kroute_quality_bar \$http_x_quality_bar;
            kroute_fallback big;
            kroute_cohort \$http_x_cohort;
            kroute_agent \$http_x_agent;
            kroute_body_max_size 2m;
            kroute_invalid_body pass;
            kroute_headers off;
            kroute_response_buffer_size 32k;
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization \$kroute_authorization;
        }

        location /v1/messages {
            kroute on;
            kroute_format anthropic;
            proxy_pass \$kroute_upstream;
            proxy_set_header x-api-key \$kroute_api_key;
        }

        location = /metrics {
            kroute_metrics;
        }

        location /other/ {
            $loc
            proxy_pass \$kroute_upstream;
        }
    }
EOF
}

nginx_ok(conf(http => ''), 'full catalog passes nginx -t', files => \%files);

nginx_ok(conf(http => '', location => 'kroute_quality_bar 75;'),
         'constant quality bar', files => \%files);

nginx_ok(conf(http => '', location => 'kroute_fallback off;'),
         'fallback off', files => \%files);

# [context, replacement, value expected quoted in the emerg line]

my $provider = 'kroute_provider p url=http://127.0.0.1:1/v1 '
             . 'key_file=%%TESTDIR%%/openai.key';
my $model = 'kroute_model m provider=openai';

my @bad = (
    [zone => 'kroute_zone kroute;', 'kroute'],
    [zone => 'kroute_zone kroute:abc;', 'kroute:abc'],
    [zone => 'kroute_zone kroute:1k;', 'kroute:1k'],
    [zone => 'kroute_zone :1m;', ':1m'],

    [http => 'kroute_provider p url=ftp://127.0.0.1/v1 '
             . 'key_file=%%TESTDIR%%/openai.key;', 'ftp://127.0.0.1/v1'],
    [http => 'kroute_provider p url=127.0.0.1:1 '
             . 'key_file=%%TESTDIR%%/openai.key;', '127.0.0.1:1'],
    [http => 'kroute_provider p url=http://127.0.0.1:1/v1 '
             . 'key_file=%%TESTDIR%%/missing.key;', 'missing.key'],
    [http => 'kroute_provider p url=http://127.0.0.1:1/v1 '
             . 'key_file=%%TESTDIR%%/empty.key;', 'empty.key'],
    [http => "$provider format=xml;", 'xml'],
    [http => "$provider colour=blue;", 'colour=blue'],
    [http => 'kroute_provider openai url=http://127.0.0.1:1/v1 '
             . 'key_file=%%TESTDIR%%/openai.key;', 'openai'],

    [http => 'kroute_model m provider=nope input=1 output=1;', 'nope'],
    [http => "$model input=abc output=1;", 'abc'],
    [http => "$model input=1 output=2x;", '2x'],
    [http => "$model input=1.1234567 output=1;", '1.1234567'],
    [http => "$model input=-1 output=1;", '-1'],
    [http => "$model input=1 output=1 cached=;", 'cached='],
    [http => "$model input=1 output=1 cache_write=0.1.2;", '0.1.2'],
    [http => "$model input=1 output=1 quality=code:101;", "code:101"],
    [http => "$model input=1 output=1 quality=nosuchtask:50;",
     'nosuchtask'],
    [http => "$model input=1 output=1 quality=code;", 'code'],
    [http => "$model input=1 output=1 output_tokens=many;", 'many'],
    [http => "$model input=1 output=1 speed=fast;", 'speed=fast'],
    [http => 'kroute_model small provider=openai input=1 output=1;',
     'small'],

    [http => 'kroute_classifier_weights %%TESTDIR%%/no-such-weights;',
     'no-such-weights'],

    [location => 'kroute maybe;', 'maybe'],
    [location => 'kroute_quality_bar;', 'kroute_quality_bar'],

    [location => 'kroute_format xml;', 'xml'],
    [location => 'kroute_invalid_body sometimes;', 'sometimes'],
    [location => 'kroute_headers maybe;', 'maybe'],
    [location => 'kroute_body_max_size lots;', 'lots'],
    [location => 'kroute_response_buffer_size huge;', 'huge'],
    [location => 'kroute_fallback no-such-model;', 'no-such-model'],
);

for my $b (@bad) {
    my ($where, $text, $value) = @$b;
    my %a = (http => '');
    $a{$where} = $text;
    my $re = qr/\[emerg\][^\n]*"[^"\n]*\Q$value\E[^"\n]*"/;
    nginx_t_fails(conf(%a), $re, "$where '$text' fails quoting \"$value\"",
                  files => \%files);
}

# directives in the wrong place

nginx_t_fails(conf(http => '',
                   location => 'kroute_provider q url=http://127.0.0.1:1 '
                               . 'key_file=%%TESTDIR%%/openai.key;'),
              qr/\[emerg\].*"kroute_provider" directive is not allowed here/,
              'kroute_provider in a location fails', files => \%files);

nginx_t_fails(conf(http => '', location => 'kroute_metrics on;'),
              qr/\[emerg\].*invalid number of arguments in "kroute_metrics"/,
              'kroute_metrics takes no argument', files => \%files);

# a running nginx with the full catalog reports nothing bad at start

my $t = Kroute::Test->new;
$t->set(MOCK_PORT => 1);
$t->write_file($_, $files{$_}) for keys %files;
$t->run(conf(http => ''));
my $r = $t->get('/metrics');
is($r->{status}, 200, 'full catalog: nginx runs and serves metrics');
$t->check_error_log(no_error => 1);

done_testing;
