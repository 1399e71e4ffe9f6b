#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Routing: a pinned model goes to its own provider with that provider's
# key and URL and the client's Authorization never leaves nginx; the route
# alias picks the cheapest model meeting the quality bar taken from a
# header; no model meeting the bar is a 400 in the OpenAI error shape, or
# the fallback model when one is configured; unknown models are refused.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use JSON::PP;
use Test::More;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;

require_module();

my $t = Kroute::Test->new;
my $alpha = Kroute::Mock->start(dir => $t->testdir, name => 'alpha');
my $beta = Kroute::Mock->start(dir => $t->testdir, name => 'beta');
$t->set(ALPHA_PORT => $alpha->port, BETA_PORT => $beta->port);
$t->write_file('alpha.key', "sk-alpha-secret-1111\n");
$t->write_file('beta.key', "sk-beta-secret-2222\n");

my $log_format = log_format('kroute');

# cheap < mid < premium on every price; quality only by default score

my $locations = <<'EOF';
            kroute on;
            kroute_quality_bar $http_x_quality_bar;
            proxy_pass $kroute_upstream;
            proxy_set_header Authorization $kroute_authorization;
            proxy_set_header Host $kroute_upstream_host;
            proxy_http_version 1.1;
            proxy_buffering off;
            access_log %%TESTDIR%%/access.log kroute;
EOF

$t->run(<<"EOF");
    $log_format

    kroute_zone kroute:1m;

    kroute_provider alpha url=http://127.0.0.1:%%ALPHA_PORT%%/v1
                    key_file=%%TESTDIR%%/alpha.key;
    kroute_provider beta url=http://127.0.0.1:%%BETA_PORT%%/v1
                    key_file=%%TESTDIR%%/beta.key;

    kroute_model cheap provider=alpha input=0.1 output=0.4
                 quality=default:50;
    kroute_model mid provider=beta input=1 output=4 quality=default:70
                 alias=mid-latest;
    kroute_model premium provider=alpha input=10 output=40
                 quality=default:90;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /v1/chat/completions {
$locations
        }

        location /fallback/v1/chat/completions {
            kroute_fallback premium;
$locations
        }

        location /router/v1/chat/completions {
            kroute_route_alias router;
            kroute_headers off;
$locations
        }
    }
EOF

my $n = 0;

sub chat {
    my ($path, $model, @headers) = @_;
    my $tid = 'r' . ++$n;
    my $r = $t->post($path, { model => $model, temperature => 0.5,
                              messages => [ { role => 'user',
                                              content => 'Say hi.' } ] },
                     headers => [ 'X-Test-Id' => $tid,
                                  'Authorization' => 'Bearer client-app-tok',
                                  @headers ]);
    $r->{tid} = $tid;
    $r->{log} = $t->log_for($tid);
    return $r;
}

sub upstream_request {
    my ($mock, $tid) = @_;
    return $mock->request_by_header('X-Test-Id', $tid);
}

# pinned model on the second provider

my $r = chat('/v1/chat/completions', 'mid');
is($r->{status}, 200, 'pinned: status');
is($r->{body}, fixture('openai-chat-resp-plain-reasoning-model.json'),
   'pinned: reply passed on');
my $up = upstream_request($beta, $r->{tid});
ok($up, 'pinned: reached the provider of the model');
ok(!upstream_request($alpha, $r->{tid}), 'pinned: not the other provider');
is($up->{headers}{authorization}, 'Bearer sk-beta-secret-2222',
   'pinned: provider key in Authorization');
like($up->{path}, qr{^/v1/chat/completions$}, 'pinned: upstream path');
is($up->{json}{model}, 'mid', 'pinned: model field');
is($up->{json}{temperature}, 0.5, 'pinned: rest of the body kept');
is($up->{json}{messages}[0]{content}, 'Say hi.', 'pinned: messages kept');
is($r->{log}{upstream},
   'http://127.0.0.1:' . $beta->port . '/v1/chat/completions',
   'pinned: $kroute_upstream');
is($r->{log}{provider}, 'beta', 'pinned: $kroute_provider');
is($r->{log}{model_requested}, 'mid', 'pinned: $kroute_model_requested');
is($r->{log}{model}, 'mid', 'pinned: $kroute_model');
is($r->{headers}{'x-kroute-model'}, 'mid', 'pinned: X-Kroute-Model');
ok($r->{headers}{'x-kroute-task'}, 'pinned: X-Kroute-Task');
ok($r->{headers}{'x-kroute-request-id'}, 'pinned: X-Kroute-Request-Id');
is($r->{headers}{'x-kroute-request-id'}, $r->{log}{rid},
   'pinned: request id header matches $kroute_request_id');

# pinned through an alias

$r = chat('/v1/chat/completions', 'mid-latest');
ok(upstream_request($beta, $r->{tid}), 'alias: goes to provider of mid');
is($r->{log}{model}, 'mid', 'alias: routed model is the catalog name');

# the route alias: cheapest model meeting the bar

my @route = (
    [undef, 'cheap', $alpha, 'no bar'],
    [0, 'cheap', $alpha, 'bar 0'],
    [50, 'cheap', $alpha, 'bar 50 met exactly'],
    [60, 'mid', $beta, 'bar 60'],
    [70, 'mid', $beta, 'bar 70'],
    [85, 'premium', $alpha, 'bar 85'],
    [90, 'premium', $alpha, 'bar 90'],
);

for my $c (@route) {
    my ($bar, $model, $mock, $name) = @$c;
    $r = chat('/v1/chat/completions', 'auto',
              defined $bar ? ('X-Quality-Bar' => $bar) : ());
    is($r->{status}, 200, "auto, $name: status");
    is($r->{log}{model}, $model, "auto, $name: routed to $model");
    is($r->{log}{model_requested}, 'auto', "auto, $name: requested auto");
    my $up = upstream_request($mock, $r->{tid});
    ok($up, "auto, $name: reached its provider");
    is($up && $up->{json}{model}, $model, "auto, $name: model rewritten");
    ok($r->{log}{route_reason}, "auto, $name: route reason set");
}

# no model meets the bar

$r = chat('/v1/chat/completions', 'auto', 'X-Quality-Bar' => 95);
is($r->{status}, 400, 'bar 95: 400');
openai_error($r, 'bar 95');
ok(!upstream_request($alpha, $r->{tid}) && !upstream_request($beta,
   $r->{tid}), 'bar 95: no upstream request');

# with a fallback

$r = chat('/fallback/v1/chat/completions', 'auto', 'X-Quality-Bar' => 95);
is($r->{status}, 200, 'fallback: status');
is($r->{log}{model}, 'premium', 'fallback: routed to the fallback');
ok(upstream_request($alpha, $r->{tid}), 'fallback: its provider');

$r = chat('/fallback/v1/chat/completions', 'auto', 'X-Quality-Bar' => 60);
is($r->{log}{model}, 'mid', 'fallback location: bar met, no fallback');

# another route alias name, headers off

$r = chat('/router/v1/chat/completions', 'router', 'X-Quality-Bar' => 60);
is($r->{status}, 200, 'route alias "router": status');
is($r->{log}{model}, 'mid', 'route alias "router": routed');
ok(!exists $r->{headers}{'x-kroute-model'}
   && !exists $r->{headers}{'x-kroute-task'}
   && !exists $r->{headers}{'x-kroute-request-id'},
   'kroute_headers off: no X-Kroute-* headers');

# unknown model

$r = $t->post('/v1/chat/completions',
              fixture('openai-chat-req-unknown-model.json'),
              headers => [ 'X-Test-Id' => 'unknown' ]);
is($r->{status}, 400, 'unknown model: 400');
openai_error($r, 'unknown model');

# no secret in logs

my $logs = $t->slurp('access.log') . $t->error_log;
unlike($logs, qr/sk-alpha-secret|sk-beta-secret|client-app-tok/,
       'no provider key or client token in the logs');

$alpha->stop;
$beta->stop;
$t->check_error_log;

done_testing;


sub openai_error {
    my ($r, $name) = @_;
    like($r->{headers}{'content-type'} || '', qr{^application/json},
         "$name: JSON content type");
    my $j = json_decode($r->{body});
    ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH', "$name: error object")
        or return diag($r->{body});
    ok(defined $j->{error}{message} && length $j->{error}{message},
       "$name: error message");
    is($j->{error}{type}, 'invalid_request_error', "$name: error type");
    ok(exists $j->{error}{param} && exists $j->{error}{code},
       "$name: param and code present");
}
