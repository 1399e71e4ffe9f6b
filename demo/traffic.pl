#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Sends the demo's traffic to a kroute gateway: recorded request bodies
# from t/fixtures/providers and a sample of labelled prompts from
# t/fixtures/prompts/dev.jsonl, with model "auto" or pinned, streamed or
# not, and different feature, cohort, agent, quality bar and user values.
# The mock provider answers each with the recorded reply named in
# X-Mock-Reply, so every usage figure is one a provider really reported.
#
#   perl demo/traffic.pl --url http://127.0.0.1:PORT --t-dir t [--rows N]

use strict;
use warnings;

use Getopt::Long;
use HTTP::Tiny;
use JSON::PP;

my %opt = (rows => 16);
GetOptions(\%opt, 'url=s', 't-dir=s', 'rows=i')
    or die "usage: $0 --url URL --t-dir DIR [--rows N]\n";
die "need --url and --t-dir\n" unless $opt{url} && $opt{'t-dir'};

my $fix = "$opt{'t-dir'}/fixtures/providers";
my $json = JSON::PP->new->canonical;
my $http = HTTP::Tiny->new(timeout => 20, keep_alive => 0);


sub fixture_body {
    my ($name) = @_;
    open my $fh, '<:raw', "$fix/$name" or die "cannot open $fix/$name: $!\n";
    local $/;
    my $data = <$fh>;
    close $fh;
    return $json->decode($data);
}


# one request: path, body, model ('' keeps the fixture's), reply, stream
# (undef keeps the fixture's), usage (stream_options.include_usage),
# headers

my @plan;

sub add {
    my (%r) = @_;
    push @plan, \%r;
}

# recorded OpenAI request bodies, routed ("auto") unless pinned
add(body => 'openai-chat-req-plain.json', model => 'auto',
    reply => 'openai-chat-resp-plain-reasoning-model.json',
    feature => 'chat-widget', cohort => 'control', user => 'u-1001');
add(body => 'openai-chat-req-multiturn-developer-role.json', model => 'auto',
    reply => 'openai-chat-resp-multiturn.json', bar => 85,
    feature => 'support-bot', cohort => 'control', user => 'u-1002');
add(body => 'openai-chat-req-response-format-json-object.json',
    model => 'auto', reply => 'openai-chat-resp-json-object.json',
    bar => 75, feature => 'invoice-extract', cohort => 'router-v2',
    user => 'u-1003');
add(body => 'openai-chat-req-response-format-json-schema.json',
    model => 'auto', reply => 'openai-chat-resp-json-object.json',
    bar => 80, feature => 'invoice-extract', cohort => 'router-v2',
    user => 'u-1003');
add(body => 'openai-chat-req-tools.json', model => 'auto',
    reply => 'openai-chat-resp-tool-call.json', feature => 'agent',
    agent => 'travel-planner', user => 'u-1004');
add(body => 'openai-chat-req-tool-choice-forced.json', model => 'auto',
    reply => 'openai-chat-resp-finish-length-tool-choice.json',
    feature => 'agent', agent => 'travel-planner', user => 'u-1004');
add(body => 'openai-chat-req-image-url.json', model => 'gpt-5-nano',
    reply => 'openai-chat-resp-image-url-2245-prompt.json',
    feature => 'photo-caption', user => 'u-1005');
add(body => 'openai-chat-req-long-content-13kb-prompt-cache.json',
    model => 'gpt-5-mini', reply => 'openai-chat-resp-cache-write-4012.json',
    feature => 'doc-qa', cohort => 'control', user => 'u-1006');
add(body => 'openai-chat-req-long-content-13kb-prompt-cache.json',
    model => 'gpt-5-mini', reply => 'openai-chat-resp-cache-read-4012.json',
    feature => 'doc-qa', cohort => 'control', user => 'u-1006');
add(body => 'openai-chat-req-stream-include-usage.json', model => 'auto',
    reply => 'openai-chat-sse-include-usage-reasoning.sse',
    feature => 'chat-widget', cohort => 'router-v2', user => 'u-1001');
add(body => 'openai-chat-req-stream-no-stream-options.json',
    model => 'gpt-5-nano', reply => 'openai-chat-sse-no-usage-chunk.sse',
    feature => 'chat-widget', cohort => 'control', user => 'u-1007');
add(body => 'openai-chat-req-plain.json', model => 'gpt-4o', stream => 1,
    usage => 1, reply => 'openai-chat-sse-long-47kb.sse',
    feature => 'story-writer', user => 'u-1008');
add(body => 'openai-chat-req-tools-parallel.json', model => 'gpt-4o',
    stream => 1, usage => 1,
    reply => 'openai-chat-sse-tool-calls-two-tools.sse', feature => 'agent',
    agent => 'weather-bot', user => 'u-1009');
add(body => 'openai-chat-req-max-completion-tokens.json',
    model => 'gpt-4o-2024-08-06', stream => 1, usage => 1,
    reply => 'openai-chat-sse-max-tokens-1.sse', feature => 'autocomplete',
    user => 'u-1010');
add(body => 'openai-chat-req-plain.json', model => 'gpt-4.1-mini',
    reply => 'openai-error-429-rate-limit-tpm.json', feature => 'chat-widget',
    user => 'u-1001');

# native Anthropic Messages traffic
add(path => '/v1/messages', body => 'anthropic-messages-req-thinking-stream.json',
    model => 'claude-sonnet-4-0', reply => 'anthropic-messages-sse-thinking.sse',
    feature => 'tutor', cohort => 'control', user => 'u-2001');
add(path => '/v1/messages', body => 'anthropic-messages-req-thinking-stream.json',
    model => 'claude-sonnet-4-5', stream => 0,
    reply => 'anthropic-messages-resp-cache-read-1111.json',
    feature => 'tutor', cohort => 'router-v2', user => 'u-2002');
add(path => '/v1/messages', body => 'anthropic-messages-req-thinking-stream.json',
    model => 'auto', reply => 'anthropic-messages-sse-tool-use.sse',
    feature => 'tutor', bar => 85, user => 'u-2003');

# refusals: unknown model, a bar no model meets, a malformed bar
add(body => 'openai-chat-req-unknown-model.json', model => '',
    reply => 'openai-chat-resp-plain-reasoning-model.json',
    feature => 'chat-widget', user => 'u-1011');
add(body => 'openai-chat-req-plain.json', model => 'auto', bar => 99,
    reply => 'openai-chat-resp-plain-reasoning-model.json',
    feature => 'chat-widget', user => 'u-1011');
add(body => 'openai-chat-req-plain.json', model => 'auto', bar => 'high',
    reply => 'openai-chat-resp-plain-reasoning-model.json',
    feature => 'chat-widget', user => 'u-1011');

# labelled prompts: a few rows of every task type, routed
my @sample = sample_prompts("$opt{'t-dir'}/fixtures/prompts/dev.jsonl",
                            $opt{rows});
my @replies = ('openai-chat-resp-plain-reasoning-model.json',
               'openai-chat-resp-multiturn.json',
               'openai-chat-resp-json-object.json');
my @bars = ('', 60, 75, 85, 90);
my @features = ('search', 'support-bot', 'doc-qa', 'code-assist');
my $i = 0;
for my $row (@sample) {
    my %r = (body => { messages => $row->{messages} }, model => 'auto',
             label => $row->{task}, bar => $bars[$i % @bars],
             feature => $features[$i % @features],
             cohort => $i % 2 ? 'router-v2' : 'control',
             user => sprintf('u-%04d', 3000 + $i % 5));
    if ($i % 4 == 3) {
        $r{stream} = 1;
        $r{usage} = $i % 8 == 7 ? 0 : 1;
        $r{reply} = 'openai-chat-sse-include-usage-reasoning.sse';
    } else {
        $r{reply} = $replies[$i % @replies];
    }
    add(%r);
    $i++;
}

my $n = 0;
for my $r (@plan) {
    $n++;
    my $body = ref $r->{body} ? { %{ $r->{body} } }
                              : fixture_body($r->{body});
    $body->{model} = $r->{model} if $r->{model} ne '';
    if (defined $r->{stream}) {
        if ($r->{stream}) {
            $body->{stream} = JSON::PP::true;
        } else {
            delete $body->{stream};
        }
    }
    if ($r->{usage}) {
        $body->{stream_options} = { include_usage => JSON::PP::true };
    }
    $body->{user} = $r->{user}
        if $r->{user} && ($r->{path} || '') ne '/v1/messages';
    if (($r->{path} || '') eq '/v1/messages' && $r->{user}) {
        $body->{metadata} = { user_id => $r->{user} };
    }

    my %h = ('Content-Type' => 'application/json',
             'X-Mock-Reply' => $r->{reply},
             'X-Demo-Seq' => $n);
    $h{'X-Feature'} = $r->{feature} if $r->{feature};
    $h{'X-Cohort'} = $r->{cohort} if $r->{cohort};
    $h{'X-Agent'} = $r->{agent} if $r->{agent};
    $h{'X-Quality-Bar'} = $r->{bar} if defined $r->{bar} && $r->{bar} ne '';
    $h{'x-api-key'} = 'client-key-ignored'
        if ($r->{path} || '') eq '/v1/messages';
    $h{'Authorization'} = 'Bearer client-key-ignored'
        unless ($r->{path} || '') eq '/v1/messages';

    my $res = $http->request('POST', $opt{url} . ($r->{path}
                                                  || '/v1/chat/completions'),
                             { headers => \%h,
                               content => $json->encode($body) });
    my $err = '';
    if ($res->{status} >= 400) {
        my $e = eval { $json->decode($res->{content}) };
        $err = $e && ref $e eq 'HASH' && ref $e->{error} eq 'HASH'
               ? ($e->{error}{code} || $e->{error}{type} || '') : '';
    }
    printf "  #%-3d %-4s %-21s -> %-22s %s%s\n", $n, $res->{status},
           ($r->{model} eq '' ? $body->{model} : $r->{model}),
           ($res->{headers}{'x-kroute-model'} || '-'),
           ($r->{label} ? "labelled $r->{label}, classified "
                        : 'classified '),
           ($res->{headers}{'x-kroute-task'} || '-')
           . ($err ne '' ? "  ($err)" : '');
}


# the first rows of each task type, round robin, so the sample is mixed
# and the same on every run

sub sample_prompts {
    my ($file, $want) = @_;
    my (%by, @order);
    open my $fh, '<', $file or return ();
    my $lines = 0;
    while (my $line = <$fh>) {
        last if ++$lines > 5000;
        my $row = eval { $json->decode($line) } or next;
        next unless ref $row->{messages} eq 'ARRAY' && $row->{task};
        next if length($line) > 6000;
        push @order, $row->{task} unless $by{ $row->{task} };
        push @{ $by{ $row->{task} } }, $row;
    }
    close $fh;
    my @out;
    for my $round (0 .. 50) {
        for my $t (@order) {
            push @out, $by{$t}[$round] if $by{$t}[$round] && @out < $want;
        }
        last if @out >= $want;
    }
    return @out;
}
