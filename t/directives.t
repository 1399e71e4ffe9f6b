#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Directives whose effect the other files only touch: kroute_user and
# kroute_agent from headers (the user goes to the trace, never to the
# metrics labels, the agent to both); kroute_response_buffer_size smaller
# than a JSON reply, whose usage is then read from the kept tail; and
# kroute_classifier_weights loading the shipped weights file.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use Test::More;

use lib File::Spec->catdir(dirname(__FILE__), 'lib');
use Kroute::Test qw(:all);
use Kroute::Mock;

require_module();

my $weights = File::Spec->rel2abs(File::Spec->catfile(dirname(__FILE__),
                                  '..', 'conf-examples',
                                  'kroute-classifier.weights'));

my $t = Kroute::Test->new;
my $mock = Kroute::Mock->start(dir => $t->testdir);
$t->set(MOCK_PORT => $mock->port, WEIGHTS => $weights);
$t->write_file('openai.key', "sk-directives-openai\n");
$t->write_file('anthropic.key', "sk-directives-anthropic\n");

my $log_format = log_format('kroute');

# prices in pico-USD per token: gpt-5-nano 50000 / 400000,
# claude-sonnet-4-5 3000000 / 15000000, cached 300000

$t->run(<<"EOF");
    $log_format

    kroute_zone kroute:1m;
    kroute_classifier_weights %%WEIGHTS%%;
    kroute_task_name code software;
    kroute_task_name rewrite writing;
    kroute_task_name generation writing;

    kroute_provider openai url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/openai.key;
    kroute_provider anthropic url=http://127.0.0.1:%%MOCK_PORT%%/v1
                    key_file=%%TESTDIR%%/anthropic.key format=anthropic;

    kroute_model gpt-5-nano provider=openai input=0.05 output=0.4
                 quality=default:60;
    kroute_model claude-sonnet-4-5 provider=anthropic input=3 output=15
                 cached=0.3 cache_write=3.75 quality=default:90;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /v1/chat/completions {
            kroute on;
            kroute_user \$http_x_user;
            kroute_agent \$http_x_agent;
            kroute_response_buffer_size 1k;
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization \$kroute_authorization;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location /v1/messages {
            kroute on;
            kroute_format anthropic;
            kroute_response_buffer_size 1k;
            proxy_pass \$kroute_upstream;
            proxy_set_header x-api-key \$kroute_api_key;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location = /metrics {
            kroute_metrics;
        }
    }
EOF

my $n = 0;

sub post {
    my ($path, $body, @headers) = @_;
    my $tid = 'd' . ++$n;
    my $r = $t->post($path, $body,
                     headers => [ 'X-Test-Id' => $tid, @headers ]);
    $r->{log} = $t->log_for($tid);
    return $r;
}

# user and agent from headers; the header user wins over the body's

my $r = post('/v1/chat/completions',
             { model => 'gpt-5-nano', user => 'body-user',
               messages => [ { role => 'user', content => 'Hello!' } ] },
             'X-User' => 'u-1842', 'X-Agent' => 'triage-bot');
is($r->{status}, 200, 'user, agent: served');
is($r->{log}{user}, 'u-1842', 'kroute_user: from the header');
is($r->{log}{agent}, 'triage-bot', 'kroute_agent: from the header');

my $m = $t->metrics;
like($m, qr/^kroute_requests_total\{[^}]*agent="triage-bot"[^}]*\} 1$/m,
     'kroute_agent: a metrics label');
unlike($m, qr/u-1842|body-user/, 'kroute_user: never in the metrics');

# a 1071-byte reply with a 1k buffer: usage from the tail, exact;
# the model it reports (at the head) is lost, the routed one is billed

$r = post('/v1/chat/completions',
          { model => 'gpt-5-nano',
            messages => [ { role => 'user', content => 'Weather?' } ] },
          'X-Mock-Reply' => 'openai-chat-resp-tool-call.json');
is($r->{log}{usage_source}, 'provider', 'long reply: provider usage');
is_deeply([ @{ $r->{log} }{qw(input output reasoning)} ], [ 162, 287, 256 ],
          'long reply: 162 in, 287 out, 256 reasoning from the tail');

# 162 * 50000 + 287 * 400000 = 122900000 pico-USD

is($r->{log}{cost_micro_usd}, '122.9', 'long reply: 122.9 micro-USD');

# a 2167-byte Anthropic reply: 3 + 1111 cache read in, 406 out;
# 3 * 3000000 + 1111 * 300000 + 406 * 15000000 = 6432300000 pico-USD

$r = post('/v1/messages',
          { model => 'claude-sonnet-4-5', max_tokens => 1024,
            messages => [ { role => 'user', content => 'Go on.' } ] },
          'X-Mock-Reply' => 'anthropic-messages-resp-cache-read-1111.json');
is_deeply([ @{ $r->{log} }{qw(input output cached)} ], [ 1114, 406, 1111 ],
          'long anthropic reply: usage from the tail');
is($r->{log}{cost_micro_usd}, '6432.3', 'long anthropic reply: cost');

# the shipped weights file classifies like the compiled-in default

$r = post('/v1/chat/completions',
          { model => 'gpt-5-nano',
            messages => [ { role => 'user', content =>
                'Write a Python function that returns the n-th '
                . 'Fibonacci number.' } ] });
is($r->{log}{task}, 'software',
   'kroute_classifier_weights: the file loads; kroute_task_name renames');
is($r->{headers}{'x-kroute-task'}, 'software', 'task name: in the header');

# two tasks under one name are counted as one

for my $p ('Translate into French: The weather is lovely today.',
           'Write a short poem about the autumn sea.')
{
    $r = post('/v1/chat/completions',
              { model => 'gpt-5-nano',
                messages => [ { role => 'user', content => $p } ] });
    is($r->{log}{task}, 'writing', "task name: merged ($p)");
}

$m = $t->metrics;
like($m, qr/^kroute_requests_total\{[^}]*task="writing"[^}]*\} 2$/m,
     'task name: one series for the merged tasks');
like($m, qr/^kroute_requests_total\{[^}]*task="software"[^}]*\} 1$/m,
     'task name: the renamed task in the labels');

$t->check_error_log(no_error => 1);

for my $c ([ 'kroute_task_name poetry verse;',
             qr/\[emerg\].*unknown task type "poetry"/ ],
           [ 'kroute_task_name code Code!;',
             qr/\[emerg\].*invalid task name "Code!"/ ],
           [ 'kroute_task_name code none;',
             qr/\[emerg\].*task name "none" is reserved/ ],
           [ "kroute_task_name code a;\n    kroute_task_name code b;",
             qr/\[emerg\].*"kroute_task_name" directive is duplicate/ ])
{
    nginx_t_fails("    $c->[0]\n", $c->[1], "bad task name: $c->[0]");
}

done_testing();
