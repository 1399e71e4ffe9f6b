#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Routing decisions beyond "cheapest meeting the bar": the task comes from
# the classifier for clear prompts and from kroute_task rules when they
# match; a provider with a run of 429s is skipped for its cool-down;
# A/B splits are sticky per user and hold their proportions; expected
# output lengths are learned from what was metered; every decision says
# why in $kroute_route_reason.

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
$t->write_file('alpha.key', "sk-alpha\n");
$t->write_file('beta.key', "sk-beta\n");

my $log_format = log_format('kroute');

# Prices in pico-USD per token (= micro-USD per 1M tokens):
#   small   alpha  in 100000     out 400000
#   coder   beta   in 1000000    out 4000000
#   longout beta   in 10000      out 10000000
#   big     alpha  in 5000000    out 20000000

$t->run(<<"EOF");
    $log_format

    kroute_zone kroute:1m;
    kroute_cooldown failures=2 window=10s time=2s;

    kroute_provider alpha url=http://127.0.0.1:%%ALPHA_PORT%%/v1
                    key_file=%%TESTDIR%%/alpha.key;
    kroute_provider beta url=http://127.0.0.1:%%BETA_PORT%%/v1
                    key_file=%%TESTDIR%%/beta.key;

    kroute_model small provider=alpha input=0.1 output=0.4
                 quality=classification:80,code:40,default:60;
    kroute_model coder provider=beta input=1 output=4
                 quality=code:85,default:70;
    kroute_model longout provider=beta input=0.01 output=10
                 quality=default:75;
    kroute_model big provider=alpha input=5 output=20 quality=default:95;

    kroute_split exp task=classification small:50 coder:50;

    server {
        listen 127.0.0.1:%%PORT%%;

        location /v1/chat/completions {
            kroute on;
            kroute_quality_bar \$http_x_quality_bar;
            kroute_feature \$http_x_feature;
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization \$kroute_authorization;
            proxy_http_version 1.1;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location /rules/v1/chat/completions {
            kroute on;
            kroute_task code "user=(?i)\\bsql\\b";
            kroute_task extraction tools;
            kroute_task classification json;
            kroute_task summarization context>2000;
            kroute_task reasoning "system=^You are a planner" messages>2;
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization \$kroute_authorization;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location /slow/v1/chat/completions {
            kroute on;
            kroute_task reasoning "user=(a+)+\$";
            proxy_pass \$kroute_upstream;
            proxy_set_header Authorization \$kroute_authorization;
            access_log %%TESTDIR%%/access.log kroute;
        }

        location = /metrics {
            kroute_metrics;
        }
    }
EOF

my $n = 0;

sub chat {
    my (%a) = @_;
    my $tid = 'rt' . ++$n;
    my $body = {
        model => $a{model} || 'auto',
        messages => $a{messages}
                    || [ { role => 'user', content => $a{prompt} } ],
        %{ $a{extra} || {} },
    };
    $body->{user} = $a{user} if defined $a{user};
    my $r = $t->post($a{path} || '/v1/chat/completions', $body,
                     headers => [ 'X-Test-Id' => $tid,
                                  @{ $a{headers} || [] } ]);
    $r->{log} = $t->log_for($tid);
    return $r;
}

# the classifier on clear prompts, and the route that follows from it

my @clear = (
    [ 'Write a Python function that returns the n-th Fibonacci number.',
      'code' ],
    [ 'Translate the following sentence into French: The weather is '
      . 'lovely today and we are going to the beach.', 'rewrite' ],
    [ "Summarize this article in two sentences.\n\nThe city council met "
      . 'on Tuesday to discuss the new budget. After hours of debate, '
      . 'members agreed to raise funding for public transport and cut '
      . 'spending on road repairs, citing climate goals. The mayor said '
      . 'the plan would be reviewed next spring.', 'summarization' ],
    [ 'A farmer has 17 sheep and buys 3 times as many goats as sheep. '
      . 'He then sells 12 goats. How many animals does he have now?',
      'reasoning' ],
    [ 'Classify the sentiment of this review as positive, negative or '
      . 'neutral: "The battery died after two days."', 'classification' ],
);

for my $c (@clear) {
    my ($prompt, $task) = @$c;
    my $r = chat(prompt => $prompt, user => 'clear');
    is($r->{log}{task}, $task, "classifier: $task");
}

# code at bar 80: only coder (85) and big (95) qualify; coder is cheaper

my $r = chat(prompt => $clear[0][0],
             headers => [ 'X-Quality-Bar' => 80 ]);
is($r->{log}{model}, 'coder', 'code bar 80: coder');
like($r->{log}{route_reason}, qr/^task=code bar=80 candidates=.*chose=coder/,
     'code bar 80: reason names task, bar and choice');

# task rules win over the classifier

$r = chat(path => '/rules/v1/chat/completions',
          prompt => 'Write a short poem that mentions SQL databases.');
is($r->{log}{task}, 'code', 'rule: user regex');

$r = chat(path => '/rules/v1/chat/completions', prompt => 'Hello there',
          extra => { tools => [ { type => 'function',
                                  function => { name => 'lookup',
                                                parameters => {} } } ] });
is($r->{log}{task}, 'extraction', 'rule: tools');

$r = chat(path => '/rules/v1/chat/completions', prompt => 'Hello there',
          extra => { response_format => { type => 'json_object' } });
is($r->{log}{task}, 'classification', 'rule: json');

$r = chat(path => '/rules/v1/chat/completions',
          prompt => 'Tell me about this. ' . ('lorem ipsum dolor ' x 600));
is($r->{log}{task}, 'summarization', 'rule: context over 2000 tokens');

$r = chat(path => '/rules/v1/chat/completions', messages => [
    { role => 'system', content => 'You are a planner for trips.' },
    { role => 'user', content => 'Hi' },
    { role => 'assistant', content => 'Hello!' },
    { role => 'user', content => 'Hello again' } ]);
is($r->{log}{task}, 'reasoning', 'rule: system regex and message count');

$r = chat(path => '/rules/v1/chat/completions', messages => [
    { role => 'system', content => 'You are a planner for trips.' },
    { role => 'user', content => 'Write a Python function that sorts a '
                                 . 'list of numbers.' } ]);
is($r->{log}{task}, 'code', 'rule conditions are ANDed: no rule, classifier');

# a rule whose regex backtracks past PCRE2's match limit: bounded (the
# text is at most 2 KB), does not match, logged at error, not alert

$r = chat(path => '/slow/v1/chat/completions', prompt => 'a' x 30 . 'b');
is($r->{status}, 200, 'match limit: served');
isnt($r->{log}{task}, 'reasoning', 'match limit: the rule does not match');
like($t->error_log, qr/\[error\].*pcre2_match\(\) failed: -47 in kroute_task/,
     'match limit: logged at error');

# A/B split on classification: 50/50 within 10 points over 200 users
# (the binomial standard deviation is 3.5 points), sticky per user

my %arm;
for my $i (1 .. 200) {
    $r = chat(prompt => $clear[4][0], user => "user-$i");
    $arm{ $r->{log}{model} }++;
}
is(($arm{small} || 0) + ($arm{coder} || 0), 200, 'split: every request in an arm');
cmp_ok(abs(($arm{small} || 0) - 100), '<=', 20,
       "split: small $arm{small} of 200 within 50% +- 10 points");

my %seen;
for (1 .. 10) {
    $r = chat(prompt => $clear[4][0], user => 'user-7');
    $seen{ $r->{log}{model} }++;
}
is(scalar keys %seen, 1, 'split: sticky for one user');
like($r->{log}{ab_arm}, qr/^exp:[01]$/, 'split: arm in $kroute_ab_arm');
like($r->{log}{route_reason}, qr/split=exp arm=/, 'split: arm in the reason');

my $m = $t->metrics;
like($m, qr/^kroute_requests_total\{[^}]*arm="exp:0"[^}]*\} \d+$/m,
     'split: arm label in the counters');

# learned output: pinned longout answers of 4 tokens teach routing that
# longout is cheap for qa despite its output price

my $qa = 'What is the capital city of Australia?';

$r = chat(prompt => $qa, headers => [ 'X-Quality-Bar' => 70 ]);
is($r->{log}{task}, 'qa', 'learned: the prompt is qa');
is($r->{log}{model}, 'coder', 'learned: before, coder is cheapest for qa');

# est. input 17 tokens: coder 17 * 1000000 + 384 * 4000000 pico-USD,
# longout 17 * 10000 + 384 * 10000000

like($r->{log}{route_reason},
     qr/candidates=coder:0\.001553,longout:0\.00384017,big:/,
     'learned: expected costs with the default qa output of 384');

for (1 .. 20) {
    chat(model => 'longout', prompt => $qa,
         headers => [ 'X-Mock-Reply' =>
                      'openai-chat-resp-cache-write-4012.json' ]);
}

$r = chat(prompt => $qa, headers => [ 'X-Quality-Bar' => 70 ]);
is($r->{log}{model}, 'longout', 'learned: after 20 answers, longout');
like($r->{log}{route_reason}, qr/longout:0\.00004017\b.*chose=longout out=4/,
     'learned: 17 * 10000 + 4 * 10000000 pico-USD, out=4');

# cool-down: two 429s from alpha put it aside for 2 s

$r = chat(prompt => $qa, headers => [ 'X-Quality-Bar' => 0 ]);
is($r->{log}{model}, 'small', 'cool-down: before, small on alpha');

for (1 .. 2) {
    $r = chat(model => 'small', prompt => $qa,
              headers => [ 'X-Mock-Reply' =>
                           'openai-error-429-rate-limit-tpm.json' ]);
    is($r->{status}, 429, 'cool-down: provider 429 passed on');
    is($r->{log}{error_class}, 'rate_limit', 'cool-down: error class');
}

$r = chat(prompt => $qa, headers => [ 'X-Quality-Bar' => 0 ]);
isnt($r->{log}{provider}, 'alpha', 'cool-down: alpha skipped');
like($r->{log}{route_reason}, qr/cooling=alpha/, 'cool-down: in the reason');

$m = $t->metrics;
like($m, qr/^kroute_provider_cooling\{provider="alpha"\} 1$/m,
     'cool-down: gauge set');
like($m, qr/^kroute_provider_cooldowns_total\{provider="alpha"\} 1$/m,
     'cool-down: counted once');

select(undef, undef, undef, 2.2);

$r = chat(prompt => $qa, headers => [ 'X-Quality-Bar' => 0 ]);
is($r->{log}{model}, 'small', 'cool-down: alpha back after 2 s');

$t->check_error_log;

# configuration errors

for my $c ([ 'kroute_task code "user=([a-z";', qr/\[emerg\].*invalid regex in "user=\(\[a-z"/ ],
           [ 'kroute_task poetry user=x;', qr/\[emerg\].*unknown task type "poetry"/ ],
           [ 'kroute_task code;', qr/\[emerg\].*invalid number of arguments in "kroute_task"/ ],
           [ 'kroute_task code bogus;', qr/\[emerg\].*invalid kroute_task condition "bogus"/ ],
           [ 'kroute_task code context>lots;', qr/\[emerg\].*"context>lots"/ ])
{
    nginx_t_fails(<<"EOF", $c->[1], "bad rule: $c->[0]");
    kroute_zone kroute:1m;
    kroute_provider alpha url=http://127.0.0.1:1/v1;
    kroute_model small provider=alpha input=0.1 output=0.4;
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { kroute on; $c->[0] }
    }
EOF
}

for my $c ([ 'kroute_split x small:50;', qr/\[emerg\].*needs at least two/ ],
           [ 'kroute_split x small:50 nope:50;', qr/\[emerg\].*"nope:50" is not a catalog model/ ],
           [ 'kroute_split x small:0 routed:1;', qr/\[emerg\].*"small:0"/ ],
           [ 'kroute_split x task=poetry small:1 routed:1;', qr/\[emerg\].*"task=poetry"/ ],
           [ 'kroute_cooldown failures=0;', qr/\[emerg\].*"failures=0"/ ],
           [ 'kroute_cooldown window=soon;', qr/\[emerg\].*"window=soon"/ ])
{
    nginx_t_fails(<<"EOF", $c->[1], "bad directive: $c->[0]");
    kroute_zone kroute:1m;
    kroute_provider alpha url=http://127.0.0.1:1/v1;
    kroute_model small provider=alpha input=0.1 output=0.4;
    $c->[0]
EOF
}

done_testing();
