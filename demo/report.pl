#!/usr/bin/perl

# Copyright (C) kroute authors
#
# Reads the demo's JSON access log (one kroute trace line per request) and
# prints it as a table, then the cost by task type and by model.  Money is
# summed exactly: the logged micro-USD decimals are turned into integer
# pico-USD, never into floats.  Every request's cost is also recomputed
# from its tokens and the catalog's prices, and any difference is shown.
#
#   perl demo/report.pl --trace trace.jsonl --catalog catalog.conf

use strict;
use warnings;

use Getopt::Long;
use JSON::PP;

my %opt;
GetOptions(\%opt, 'trace=s', 'catalog=s')
    or die "usage: $0 --trace FILE --catalog FILE\n";

my $json = JSON::PP->new;
my %catalog = read_catalog($opt{catalog});

my @rows;
open my $fh, '<', $opt{trace} or die "cannot open $opt{trace}: $!\n";
while (my $line = <$fh>) {
    next unless $line =~ /\S/;
    push @rows, $json->decode($line);
}
close $fh;

@rows = sort { ($a->{demo_seq} || 0) <=> ($b->{demo_seq} || 0) } @rows;

print "Requests (JSON access log, one line each):\n\n";
printf "%-3s %-10s %-15s %-14s %-40s %6s %5s %5s %5s %-8s %15s %6s %6s\n",
       '#', 'request', 'feature', 'task', 'requested -> routed (reported)',
       'in', 'out', 'cache', 'reas', 'usage', 'cost USD', 'ms', 'ttft';

my (%by_task, %by_model, %by_feature, $total, $checked, @wrong);
$total = 0;
$checked = 0;

for my $r (@rows) {
    my $route = ($r->{model_requested} || '-') . ' -> '
                . ($r->{model} || '-');
    $route .= " ($r->{model_reported})"
        if $r->{model_reported} ne '' && $r->{model_reported} ne $r->{model};
    $route .= " [$r->{status} $r->{error_class}]"
        if $r->{status} >= 400
           || ($r->{error_class} ne '' && $r->{error_class} ne 'none');
    my $cached = ($r->{cached_tokens} || 0) + ($r->{cache_write_tokens} || 0);
    printf "%-3s %-10s %-15s %-14s %-40s %6s %5s %5s %5s %-8s %15s %6s %6s\n",
           $r->{demo_seq}, substr($r->{request_id}, 0, 10),
           substr($r->{feature} || '-', 0, 15), $r->{task} || '-',
           $route, num($r->{input_tokens}), num($r->{output_tokens}),
           ($r->{cache_write_tokens} || 0) > 0
               ? "w$r->{cache_write_tokens}" : num($r->{cached_tokens}),
           num($r->{reasoning_tokens}), $r->{usage_source} || '-',
           $r->{cost_usd} eq '' ? '-' : $r->{cost_usd},
           num($r->{latency_ms}), num($r->{ttft_ms});

    my $pico = micro_to_pico($r->{cost_micro_usd});
    my $usd = usd_to_pico($r->{cost_usd});
    if ($pico != $usd) {
        push @wrong, "#$r->{demo_seq}: cost_usd $r->{cost_usd} and "
                     . "cost_micro_usd $r->{cost_micro_usd} disagree";
    }

    my $m = billed_model($r);
    if ($m && $r->{usage_source} ne '' && $r->{usage_source} ne 'none') {
        my $want = expected_pico($catalog{$m}, $r);
        $checked++;
        if ($want != $pico) {
            push @wrong, "#$r->{demo_seq}: logged " . pico_usd($pico)
                         . " USD, catalog prices of $m give "
                         . pico_usd($want) . " USD";
        }
    }

    next if $r->{task} eq '';
    my $model = $r->{model} eq '' ? '(refused)' : $r->{model};
    for my $acc ([\%by_task, $r->{task}], [\%by_model, $model],
                 [\%by_feature, $r->{feature} eq '' ? '-' : $r->{feature}])
    {
        my $s = $acc->[0]{ $acc->[1] } ||= { req => 0, pico => 0, in => 0,
                                             out => 0 };
        $s->{req}++;
        $s->{pico} += $pico;
        $s->{in} += $r->{input_tokens} || 0;
        $s->{out} += $r->{output_tokens} || 0;
    }
    $total += $pico;
}

summary('task type', \%by_task);
summary('routed model', \%by_model);
summary('feature', \%by_feature);

printf "\nTotal: %s USD over %d requests (sum of logged costs, exact).\n",
       pico_usd($total), scalar @rows;
if (@wrong) {
    print "\nCost check FAILED:\n";
    print "  $_\n" for @wrong;
    exit 1;
}
print "Cost check: $checked metered requests recomputed from tokens x "
      . "catalog prices, all equal to the logged cost.\n";


sub summary {
    my ($what, $h) = @_;
    print "\nCost by $what:\n";
    printf "  %-26s %5s %9s %9s %18s %6s\n", $what, 'req', 'in tok',
           'out tok', 'cost USD', 'share';
    for my $k (sort { $h->{$b}{pico} <=> $h->{$a}{pico} || $a cmp $b }
               keys %$h)
    {
        my $s = $h->{$k};
        printf "  %-26s %5d %9d %9d %18s %6s\n", $k, $s->{req}, $s->{in},
               $s->{out}, pico_usd($s->{pico}), share($s->{pico}, $total);
    }
}


sub num {
    my ($v) = @_;
    return defined $v && $v ne '' ? $v : '-';
}


# "12.345678" micro-USD -> 12345678 pico-USD, digit by digit

sub micro_to_pico {
    my ($s) = @_;
    return 0 if !defined $s || $s eq '';
    my ($int, $frac) = $s =~ /^(\d+)(?:\.(\d{1,6}))?$/
        or die "bad micro-USD value \"$s\"\n";
    $frac = substr(($frac // '') . '000000', 0, 6);
    use integer;
    return $int * 1000000 + $frac;
}


sub usd_to_pico {
    my ($s) = @_;
    return 0 if !defined $s || $s eq '';
    my ($int, $frac) = $s =~ /^(\d+)(?:\.(\d{1,12}))?$/
        or die "bad USD value \"$s\"\n";
    $frac = substr(($frac // '') . '000000000000', 0, 12);
    use integer;
    return $int * 1000000000000 + $frac;
}


sub pico_usd {
    my ($p) = @_;
    use integer;
    my $s = sprintf '%d.%012d', $p / 1000000000000, $p % 1000000000000;
    $s =~ s/0+$//;
    $s =~ s/\.$//;
    return $s;
}


sub share {
    my ($part, $all) = @_;
    return '-' unless $all;
    use integer;
    my $permille = ($part * 1000 + $all / 2) / $all;
    return sprintf '%d.%d%%', $permille / 10, $permille % 10;
}


# USD per 1M tokens, up to 6 decimals -> pico-USD per token

sub price_pico {
    my ($s) = @_;
    my ($int, $frac) = $s =~ /^(\d+)(?:\.(\d{1,6}))?$/
        or die "bad price \"$s\"\n";
    $frac = substr(($frac // '') . '000000', 0, 6);
    use integer;
    return $int * 1000000 + $frac;
}


sub read_catalog {
    my ($file) = @_;
    my (%cat, $text);
    open my $fh, '<', $file or die "cannot open $file: $!\n";
    while (my $line = <$fh>) {
        $line =~ s/#.*//;
        $text .= $line;
    }
    close $fh;
    for my $stmt (split /;/, $text) {
        my @w = split ' ', $stmt;
        next unless @w >= 2 && $w[0] eq 'kroute_model';
        my %m = (name => $w[1]);
        for my $kv (@w[2 .. $#w]) {
            my ($k, $v) = split /=/, $kv, 2;
            $m{$k} = $v;
        }
        for my $k (qw(input output cached cache_write)) {
            $m{"p_$k"} = price_pico($m{$k}) if defined $m{$k};
        }
        $m{p_cached} //= $m{p_input};
        $m{p_cache_write} //= $m{p_input};
        $cat{ $m{name} } = \%m;
        for my $a (split /,/, $m{alias} || '') {
            $cat{$a} = \%m;
        }
    }
    return %cat;
}


# the model kroute bills: the reported one when the catalog knows it
# (also without a date suffix), else the routed one

sub billed_model {
    my ($r) = @_;
    my $rep = $r->{model_reported} // '';
    for my $n ($rep, ($rep =~ /^(.+)-\d{4}-\d\d-\d\d$/),
               ($rep =~ /^(.+)-\d{8}$/))
    {
        return $catalog{$n}{name} if $n ne '' && $catalog{$n};
    }
    return $r->{model} ne '' && $catalog{ $r->{model} }
           ? $catalog{ $r->{model} }{name} : undef;
}


sub expected_pico {
    my ($m, $r) = @_;
    use integer;
    my $in = $r->{input_tokens} || 0;
    my $cached = $r->{cached_tokens} || 0;
    my $cw = $r->{cache_write_tokens} || 0;
    my $out = $r->{output_tokens} || 0;
    return ($in - $cached - $cw) * $m->{p_input} + $cached * $m->{p_cached}
           + $cw * $m->{p_cache_write} + $out * $m->{p_output};
}
