#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Builds a chat-completion request body of about SIZE bytes for the kroute
# bench out of real prompts: the user messages of the prompt data set,
# joined with blank lines into one user message behind a short system
# message, cut to size on a character boundary.
#
#   mkbody.pl PROMPTS.jsonl SIZE MODEL [stream] > body.json

use strict;
use warnings;

use JSON::PP;

my ($prompts, $size, $model, $stream) = @ARGV;

die "usage: mkbody.pl PROMPTS.jsonl SIZE MODEL [stream]\n"
    unless defined $model && $size =~ /^\d+$/;

my $json = JSON::PP->new->utf8->canonical;
my @texts;

open my $fh, '<:raw', $prompts or die "$prompts: $!\n";

while (my $line = <$fh>) {
    my $row = eval { $json->decode($line) } or next;

    for my $m (@{ $row->{messages} || [] }) {
        next unless ($m->{role} || '') eq 'user' && !ref $m->{content};
        push @texts, $m->{content};
    }
}

close $fh;

die "$prompts: no user messages\n" unless @texts;

my %req = (
    model    => $model,
    messages => [
        { role => 'system', content => 'You are a helpful assistant.' },
        { role => 'user', content => '' },
    ],
);

if (defined $stream && $stream eq 'stream') {
    $req{stream} = JSON::PP::true;
    $req{stream_options} = { include_usage => JSON::PP::true };
}

my $overhead = length $json->encode(\%req);
my $text = '';
my $i = 0;

while (length($json->encode([$text])) < $size - $overhead) {
    $text .= "\n\n" if length $text;
    $text .= $texts[$i++ % @texts];
}

# trim characters until the encoded body fits
my $enc = JSON::PP->new->utf8->canonical;

for (;;) {
    $req{messages}[1]{content} = $text;
    my $out = $enc->encode(\%req);
    my $over = length($out) - $size;

    if ($over <= 0) {
        print $out;
        last;
    }

    substr($text, -($over > 8 ? int($over / 2) : 1)) = '';
}
