package Kroute::Test;

# Copyright (C) kroute authors
#
# Test harness for kroute: runs the system nginx with the built kroute
# module from a configuration the test writes, in a private prefix on free
# loopback ports, and talks to it over raw sockets so that tests see the
# exact bytes and the arrival time of every piece of a streamed reply.  It
# also reads the JSON access log, fetches the Prometheus metrics and checks
# that the error log holds no alert, crit or emerg lines.

use strict;
use warnings;

use Exporter qw(import);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(nginx_ok nginx_t_fails module_path require_module
                    have_module fixture log_format repo_root json_decode
                    parse_metrics metric_sum pusd_to_usd usd_to_pusd);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

our $NGINX = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';

my $ROOT = File::Spec->rel2abs(
    File::Spec->catdir(dirname(__FILE__), '..', '..', '..'));

# nginx instances this process started, stopped however the test ends:
# a test killed by a signal (a closed pipe, ^C) exits through END too

my %RUNNING;

for my $sig (qw(INT TERM HUP PIPE)) {
    $SIG{$sig} = sub { exit 1 };
}

END {
    local $?;
    for my $t (values %RUNNING) {
        $t->stop if $t && $t->{parent} == $$;
    }
}


sub repo_root { $ROOT }


sub module_path {
    return $ENV{TEST_KROUTE_MODULE} if $ENV{TEST_KROUTE_MODULE};
    return File::Spec->catfile($ROOT, 'build', 'ngx_http_kroute_module.so');
}


sub have_module { -f module_path() }


sub require_module {
    return if have_module();
    plan skip_all => 'kroute module not built yet: '
        . 'build/ngx_http_kroute_module.so is missing (run make)';
}


sub fixture {
    my ($name) = @_;
    my $path = File::Spec->catfile($ROOT, 't', 'fixtures', 'providers',
                                   $name);
    open my $fh, '<:raw', $path or die "cannot open fixture $path: $!\n";
    local $/;
    my $data = <$fh>;
    close $fh;
    return $data;
}


sub json_decode {
    my ($text) = @_;
    return eval { JSON::PP->new->decode($text) };
}


# One JSON object per request, every field a string; $http_x_test_id lets
# a test find the line of its request.

sub log_format {
    my ($name) = @_;
    $name ||= 'kroute';
    my @f = (
        tid => '$http_x_test_id',
        status => '$status',
        rid => '$kroute_request_id',
        task => '$kroute_task',
        model_requested => '$kroute_model_requested',
        model => '$kroute_model',
        model_reported => '$kroute_model_reported',
        provider => '$kroute_provider',
        upstream => '$kroute_upstream',
        input => '$kroute_input_tokens',
        output => '$kroute_output_tokens',
        cached => '$kroute_cached_tokens',
        cache_write => '$kroute_cache_write_tokens',
        reasoning => '$kroute_reasoning_tokens',
        usage_source => '$kroute_usage_source',
        cost_usd => '$kroute_cost_usd',
        cost_micro_usd => '$kroute_cost_micro_usd',
        latency_ms => '$kroute_latency_ms',
        ttft_ms => '$kroute_ttft_ms',
        kroute_status => '$kroute_status',
        error_class => '$kroute_error_class',
        feature => '$kroute_feature',
        user => '$kroute_user',
        cohort => '$kroute_cohort',
        agent => '$kroute_agent',
        finish_reason => '$kroute_finish_reason',
        parse => '$kroute_parse',
        route_reason => '$kroute_route_reason',
        ab_arm => '$kroute_ab_arm',
        bytes_sent => '$body_bytes_sent',
    );
    my @pairs;
    while (my ($k, $v) = splice @f, 0, 2) {
        push @pairs, qq{"$k":"$v"};
    }
    return "log_format $name escape=json '{" . join(',', @pairs) . "}';";
}


sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or die "cannot bind a free port: $!\n";
    my $port = $s->sockport;
    close $s;
    return $port;
}


# ---- configuration ------------------------------------------------------

sub new {
    my ($class, %opt) = @_;
    my $dir = tempdir('kroute-test-XXXXXX', TMPDIR => 1,
                      CLEANUP => !$ENV{TEST_KROUTE_LEAVE});
    chmod 0755, $dir;
    make_path("$dir/logs", "$dir/temp");

    my $self = bless {
        dir => $dir,
        workers => $opt{workers} || 2,
        module => exists $opt{module} ? $opt{module} : 1,
        log_level => $opt{log_level} || $ENV{TEST_KROUTE_LOG_LEVEL} || 'info',
        vars => { PORT => free_port(), TESTDIR => $dir,
                  MODULE => module_path() },
        parent => $$,
    }, $class;

    diag("test dir $dir") if $ENV{TEST_KROUTE_LEAVE};
    return $self;
}


sub testdir { $_[0]{dir} }

sub port { $_[0]{vars}{PORT} }


sub set {
    my ($self, %vars) = @_;
    @{ $self->{vars} }{ keys %vars } = values %vars;
    return $self;
}


# %%NAME%% placeholders: PORT, TESTDIR, MODULE, and whatever set() gave
# (MOCK_PORT and friends); an unknown one is a test bug

sub expand {
    my ($self, $text) = @_;
    $text =~ s{%%(\w+)%%}{
        defined $self->{vars}{$1} ? $self->{vars}{$1}
            : die "unknown placeholder %%$1%% in test config\n"
    }ge;
    return $text;
}


sub write_file {
    my ($self, $name, $content) = @_;
    my $path = File::Spec->catfile($self->{dir}, $name);
    open my $fh, '>:raw', $path or die "cannot write $path: $!\n";
    print $fh $content;
    close $fh;
    return $path;
}


sub full_config {
    my ($self, $http, %opt) = @_;
    my $d = $self->{dir};
    my $module = exists $opt{module} ? $opt{module} : $self->{module};
    my $user = $> == 0 ? "user root root;\n" : '';

    my $conf = ($module ? "load_module %%MODULE%%;\n" : '')
        . $user
        . "daemon off;\n"
        . "master_process on;\n"
        . "worker_processes $self->{workers};\n"
        . "pid $d/nginx.pid;\n"
        . "error_log $d/error.log $self->{log_level};\n"
        . ($opt{main} || '')
        . "\nevents {\n    worker_connections 256;\n}\n\n"
        . "http {\n"
        . "    access_log $d/logs/default-access.log;\n"
        . "    client_body_temp_path $d/temp/body;\n"
        . "    proxy_temp_path $d/temp/proxy;\n"
        . "    fastcgi_temp_path $d/temp/fastcgi;\n"
        . "    uwsgi_temp_path $d/temp/uwsgi;\n"
        . "    scgi_temp_path $d/temp/scgi;\n\n"
        . $http
        . "\n}\n";

    return $self->expand($conf);
}


sub write_config {
    my ($self, $http, %opt) = @_;
    $self->{conf_text} = $self->full_config($http, %opt);
    return $self->write_file('nginx.conf', $self->{conf_text});
}


sub nginx_test_output {
    my ($self) = @_;
    my $d = $self->{dir};
    my $out = `$NGINX -t -p $d/ -c $d/nginx.conf 2>&1`;
    return ($? >> 8, $out);
}


# nginx_ok($http_conf, $name, %opt): the configuration passes nginx -t;
# %opt: files => { name => content } written into the test dir first,
# vars => { NAME => value } more placeholders, main => main context lines

sub nginx_ok {
    my ($http, $name, %opt) = @_;
    my $t = Kroute::Test->new(%opt);
    $t->set(%{ $opt{vars} || {} });
    $t->set(MOCK_PORT => free_port()) unless $t->{vars}{MOCK_PORT};
    $t->write_file($_, $opt{files}{$_}) for keys %{ $opt{files} || {} };
    $t->write_config($http, %opt);
    my ($rc, $out) = $t->nginx_test_output;
    ok($rc == 0, $name || 'nginx -t passes') or diag($out);
    return $out;
}


# nginx_t_fails($http_conf, qr/pattern/, $name, %opt): nginx -t fails
# and its output matches the pattern; returns the output

sub nginx_t_fails {
    my ($http, $re, $name, %opt) = @_;
    my $t = Kroute::Test->new(%opt);
    $t->set(%{ $opt{vars} || {} });
    $t->set(MOCK_PORT => free_port()) unless $t->{vars}{MOCK_PORT};
    $t->write_file($_, $opt{files}{$_}) for keys %{ $opt{files} || {} };
    $t->write_config($http, %opt);
    my ($rc, $out) = $t->nginx_test_output;
    ok($rc != 0 && $out =~ $re, $name || "nginx -t fails with $re")
        or diag("exit code $rc, output:\n$out");
    return $out;
}


# ---- process control ----------------------------------------------------

sub run {
    my ($self, $http, %opt) = @_;
    my $d = $self->{dir};

    $self->write_config($http, %opt) if defined $http;

    my $pid = fork;
    die "fork failed: $!\n" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/nginx.stdout";
        open STDERR, '>>', "$d/nginx.stderr";
        { exec $NGINX, '-p', "$d/", '-c', "$d/nginx.conf"; }
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    $RUNNING{"$self"} = $self;

    my $deadline = time + 10;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pid};
            die "nginx exited at start:\n" . $self->slurp('nginx.stderr')
                . $self->slurp('error.log');
        }
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $self->port,
                                      Proto => 'tcp');
        if ($s && -s "$d/nginx.pid"
            && $self->workers >= $self->{workers})
        {
            close $s;
            return $self;
        }
        sleep 0.05;
    }
    die "nginx did not start listening on port " . $self->port . "\n";
}


sub slurp {
    my ($self, $name) = @_;
    my $path = File::Spec->catfile($self->{dir}, $name);
    open my $fh, '<:raw', $path or return '';
    local $/;
    my $data = <$fh>;
    close $fh;
    return $data;
}


# worker pids: children of the master, read from /proc

sub workers {
    my ($self) = @_;
    my @w;
    return () unless $self->{pid};
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh>;
        close $fh;
        next unless defined $line;
        my ($pid, $rest) = $line =~ /^(\d+) \(.*\) (.*)$/ or next;
        my (undef, $ppid) = split / /, $rest;
        push @w, $pid if $ppid == $self->{pid};
    }
    return @w;
}


# reload with an optional new http config; returns when every old worker
# is gone and the new ones are up

sub reload {
    my ($self, $http, %opt) = @_;
    my %old = map { $_ => 1 } $self->workers;

    $self->write_config($http, %opt) if defined $http;
    kill 'HUP', $self->{pid} or die "cannot signal nginx: $!\n";

    my $deadline = time + 15;
    while (time < $deadline) {
        my @now = $self->workers;
        my @new = grep { !$old{$_} } @now;
        return $self if @new >= $self->{workers} && @new == @now;
        sleep 0.05;
    }
    die "nginx reload did not complete in 15s\n";
}


sub stop {
    my ($self) = @_;
    delete $RUNNING{"$self"};
    my $pid = delete $self->{pid} or return;
    kill 'QUIT', $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    kill 'TERM', $pid;
    sleep 0.5;
    kill 'KILL', $pid if waitpid($pid, WNOHANG) == 0;
    waitpid($pid, 0);
}


sub DESTROY {
    my ($self) = @_;
    local $?;
    $self->stop if $self->{pid} && $self->{parent} == $$;
}


# ---- logs ---------------------------------------------------------------

sub error_log { $_[0]->slurp('error.log') }


# check_error_log(%opt): stops nginx (flushing logs) and asserts no
# [alert], [crit] or [emerg]; with no_error => 1 also no [error]

sub check_error_log {
    my ($self, %opt) = @_;
    $self->stop unless $opt{keep_running};

    my $levels = $opt{no_error} ? 'alert|crit|emerg|error' : 'alert|crit|emerg';
    my @bad = grep { /\[(?:$levels)\]/ } split /\n/, $self->error_log;
    my $name = $opt{name} || "no [$levels] in error log";
    ok(!@bad, $name) or diag(join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]);
    return !@bad;
}


# all access log lines, decoded; with n => N waits up to 5s for N lines

sub access_log {
    my ($self, %opt) = @_;
    my $file = $opt{file} || 'access.log';
    my $n = $opt{n} || 0;
    my $deadline = time + 5;
    my @lines;
    while (1) {
        @lines = grep { /\S/ } split /\n/, $self->slurp($file);
        last if @lines >= $n || time > $deadline;
        sleep 0.05;
    }
    return map {
        my $j = json_decode($_);
        defined $j ? $j : { _unparsed => $_ };
    } @lines;
}


# the access log line whose $http_x_test_id is $tid (waits up to 5s)

sub log_for {
    my ($self, $tid, %opt) = @_;
    my $deadline = time + 5;
    my $file = $opt{file} || 'access.log';
    my $needle = qq{"tid":"$tid"};
    while (1) {
        for my $line (reverse split /\n/, $self->slurp($file)) {
            next if index($line, $needle) < 0;
            my $l = json_decode($line);
            return $l if $l && defined $l->{tid} && $l->{tid} eq $tid;
        }
        return undef if time > $deadline;
        sleep 0.05;
    }
}


# ---- HTTP client --------------------------------------------------------

# request(method => 'POST', path => '/v1/chat/completions', port => N,
#         headers => [name => value, ...], body => $bytes,
#         chunked => 1 | [size, size, ...], chunk_delay_ms => N,
#         timeout => seconds)
# returns { status, headers => {lc name => value}, body, raw,
#           parts => [[time, bytes], ...], sent_at, events => [...] }

sub request {
    my ($self, %a) = @_;
    my $method = $a{method} || ($a{body} ? 'POST' : 'GET');
    my $path = $a{path} || '/';
    my $port = $a{port} || $self->port;
    my $timeout = $a{timeout} || 30;
    my @h = @{ $a{headers} || [] };
    my $body = $a{body};

    my $head = "$method $path HTTP/1.1\r\nHost: localhost\r\n"
             . "Connection: close\r\n";
    while (my ($k, $v) = splice @h, 0, 2) {
        $head .= "$k: $v\r\n";
    }

    my @pieces;
    if (defined $body && $a{chunked}) {
        $head .= "Transfer-Encoding: chunked\r\n\r\n";
        my @sizes = ref $a{chunked} ? @{ $a{chunked} } : (length $body || 1);
        my $off = 0;
        while ($off < length $body) {
            my $n = @sizes > 1 ? shift @sizes : $sizes[0];
            my $p = substr($body, $off, $n);
            push @pieces, sprintf("%x\r\n%s\r\n", length $p, $p);
            $off += length $p;
        }
        push @pieces, "0\r\n\r\n";
        $pieces[0] = $head . $pieces[0];
    } elsif (defined $body) {
        $head .= "Content-Length: " . length($body) . "\r\n\r\n";
        push @pieces, $head . $body;
    } else {
        push @pieces, "$head\r\n";
    }

    local $SIG{PIPE} = 'IGNORE';

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 5)
        or die "cannot connect to 127.0.0.1:$port: $!\n";

    for my $i (0 .. $#pieces) {
        sleep $a{chunk_delay_ms} / 1000 if $a{chunk_delay_ms} && $i > 0;
        my $p = $pieces[$i];
        my $off = 0;
        while ($off < length $p) {
            my $n = syswrite($s, $p, length($p) - $off, $off);
            last unless defined $n;    # the server may answer early
            $off += $n;
        }
    }
    my $sent_at = time;

    my $sel = IO::Select->new($s);
    my (@parts, $raw);
    $raw = '';
    my $deadline = time + $timeout;
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        push @parts, [time, $buf];
        $raw .= $buf;
    }
    close $s;

    my $r = parse_response($raw, \@parts);
    $r->{sent_at} = $sent_at;
    return $r;
}


sub parse_response {
    my ($raw, $parts) = @_;
    my $r = { raw => $raw, parts => $parts, headers => {}, body => '',
              events => [] };

    my $hend = index $raw, "\r\n\r\n";
    return $r if $hend < 0;

    my @lines = split /\r\n/, substr($raw, 0, $hend);
    ($r->{status}) = (shift @lines) =~ m{^HTTP/\d\.\d (\d{3})};
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
        $k = lc $k;
        $r->{headers}{$k} = exists $r->{headers}{$k}
                            ? "$r->{headers}{$k}, $v" : $v;
    }

    # decoded body segments: [decoded offset, raw offset, length]
    my @seg;
    my $pos = $hend + 4;
    my $body = '';
    if (($r->{headers}{'transfer-encoding'} || '') =~ /chunked/i) {
        while ($pos < length $raw) {
            my $crlf = index $raw, "\r\n", $pos;
            last if $crlf < 0;
            my ($size) = substr($raw, $pos, $crlf - $pos) =~ /^([0-9a-fA-F]+)/;
            last unless defined $size;
            $size = hex $size;
            if ($size == 0) {
                $r->{complete} = 1;
                last;
            }
            my $avail = length($raw) - ($crlf + 2);
            my $len = $size < $avail ? $size : $avail;
            push @seg, [length $body, $crlf + 2, $len];
            $body .= substr($raw, $crlf + 2, $len);
            last if $len < $size;
            $pos = $crlf + 2 + $size + 2;
        }
    } else {
        push @seg, [0, $pos, length($raw) - $pos];
        $body = substr($raw, $pos);
        my $cl = $r->{headers}{'content-length'};
        $r->{complete} = defined $cl ? length($body) == $cl : 1;
    }

    if (($r->{headers}{'content-encoding'} || '') =~ /gzip/) {
        require IO::Uncompress::Gunzip;
        my $plain;
        IO::Uncompress::Gunzip::gunzip(\$body => \$plain)
            or $plain = undef;
        $r->{gzipped_body} = $body;
        $body = $plain if defined $plain;
        @seg = ();
    }
    $r->{body} = $body;

    # arrival time of a decoded byte: the read holding its raw byte
    my @ends;
    my $acc = 0;
    for my $p (@$parts) {
        $acc += length $p->[1];
        push @ends, [$acc, $p->[0]];
    }
    my $time_of = sub {
        my ($doff) = @_;
        for my $s (reverse @seg) {
            next if $doff < $s->[0];
            my $roff = $s->[1] + ($doff - $s->[0]);
            for my $e (@ends) {
                return $e->[1] if $roff < $e->[0];
            }
        }
        return @ends ? $ends[-1][1] : undef;
    };

    if (($r->{headers}{'content-type'} || '') =~ m{text/event-stream}) {
        my $off = 0;
        while ($body =~ /\G(.*?\r?\n\r?\n)/gs) {
            my $ev = $1;
            my $end = $off + length($ev) - 1;
            push @{ $r->{events} }, { time => $time_of->($end),
                                      text => $ev, data => sse_data($ev) };
            $off += length $ev;
        }
    }

    return $r;
}


sub sse_data {
    my ($ev) = @_;
    my @d = map { /^data: ?(.*)$/ ? $1 : () } split /\r?\n/, $ev;
    return @d ? join("\n", @d) : undef;
}


sub get {
    my ($self, $path, %a) = @_;
    return $self->request(method => 'GET', path => $path, %a);
}


# post a chat request: body may be a hashref (JSON encoded here)

sub post {
    my ($self, $path, $body, %a) = @_;
    $body = JSON::PP->new->canonical->encode($body) if ref $body;
    return $self->request(method => 'POST', path => $path, body => $body,
                          headers => [ 'Content-Type' => 'application/json',
                                       @{ $a{headers} || [] } ],
                          map { $_ eq 'headers' ? () : ($_ => $a{$_}) }
                          keys %a);
}


# ---- metrics ------------------------------------------------------------

sub metrics {
    my ($self, $path) = @_;
    my $r = $self->get($path || '/metrics');
    return $r->{status} && $r->{status} == 200 ? $r->{body} : undef;
}


# { 'name{labels}' => value } from Prometheus text

sub parse_metrics {
    my ($text) = @_;
    my %m;
    for (split /\n/, $text || '') {
        next if /^#/ || !/\S/;
        my ($k, $v) = /^(\S+(?:\{.*\})?)\s+(\S+)/ or next;
        $m{$k} = $v;
    }
    return \%m;
}


# sum of a metric over all series whose labels include %$match

sub metric_sum {
    my ($text, $name, $match) = @_;
    my $sum = 0;
    my $m = parse_metrics($text);
    SERIES: for my $k (keys %$m) {
        my ($n, $l) = $k =~ /^([^{]+)(?:\{(.*)\})?$/ or next;
        next unless $n eq $name;
        my %labels = ($l || '') =~ /(\w+)="((?:[^"\\]|\\.)*)"/g;
        for (keys %{ $match || {} }) {
            next SERIES unless defined $labels{$_}
                               && $labels{$_} eq $match->{$_};
        }
        $sum += $m->{$k};
    }
    return $sum;
}


# ---- money --------------------------------------------------------------

# exact decimal USD text <-> integer pico-USD, no floats

sub usd_to_pusd {
    my ($s) = @_;
    return undef unless defined $s && $s =~ /^(\d+)(?:\.(\d{0,12}))?$/;
    my ($int, $frac) = ($1, $2 // '');
    $frac .= '0' x (12 - length $frac);
    my $v = "$int$frac";
    $v =~ s/^0+(?=\d)//;
    return $v + 0;
}


sub pusd_to_usd {
    my ($p) = @_;
    my $int = int($p / 1_000_000_000_000);
    my $frac = sprintf '%012d', $p % 1_000_000_000_000;
    $frac =~ s/0+$//;
    return length $frac ? "$int.$frac" : "$int";
}


1;
