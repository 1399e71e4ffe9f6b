package Kroute::Redis;

# Copyright (C) kroute authors
#
# Test helper for kroute-agg: starts a private redis-server on a free
# loopback port in a temporary directory (and stops it), speaks RESP to
# it over IO::Socket::INET, builds the module's hour-bucket field names,
# and runs kroute-agg capturing its exit code, stdout and stderr.

use strict;
use warnings;

use File::Temp qw(tempdir);
use FindBin;
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep);

our $SEP = "\x1f";

sub free_port {
    my $s = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
        Listen => 1, ReuseAddr => 1) or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub start {
    my ($class, %opt) = @_;
    my $dir = $opt{dir} // tempdir(CLEANUP => 1);
    my $port = free_port();
    my $log = "$dir/redis.log";

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        chdir $dir or die;
        open STDOUT, '>', $log or die;
        open STDERR, '>&', \*STDOUT or die;
        exec 'redis-server', '--port', $port, '--bind', '127.0.0.1',
            '--save', '', '--appendonly', 'no', '--daemonize', 'no',
            '--dir', $dir
            or POSIX::_exit(127);
    }

    my $self = bless { port => $port, pid => $pid, dir => $dir,
                       log => $log }, $class;

    for (1 .. 100) {
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                         PeerPort => $port, Proto => 'tcp');
        if ($sock) {
            $self->{sock} = $sock;
            last;
        }
        sleep 0.05;
    }

    die "redis-server did not start on $port" unless $self->{sock};
    $self->cmd('PING') eq 'PONG' or die "redis-server does not answer";

    return $self;
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }

sub _read_reply {
    my ($sock) = @_;
    my $line = <$sock>;
    die "redis connection closed" unless defined $line;
    $line =~ s/\r\n\z//;
    my ($t, $rest) = (substr($line, 0, 1), substr($line, 1));

    return $rest if $t eq '+';
    die "redis error: $rest\n" if $t eq '-';
    return $rest + 0 if $t eq ':';

    if ($t eq '$') {
        return undef if $rest < 0;
        my $buf = '';
        while (length($buf) < $rest + 2) {
            my $n = read($sock, $buf, $rest + 2 - length($buf),
                         length($buf));
            die "redis read failed" unless $n;
        }
        return substr($buf, 0, $rest);
    }

    if ($t eq '*') {
        return undef if $rest < 0;
        return [ map { _read_reply($sock) } 1 .. $rest ];
    }

    die "bad redis reply line: $line";
}

sub cmd {
    my ($self, @args) = @_;
    my $sock = $self->{sock};
    my $req = '*' . scalar(@args) . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for @args;
    print $sock $req;
    return _read_reply($sock);
}

# HGETALL as a hash ref
sub hgetall {
    my ($self, $key) = @_;
    my $list = $self->cmd('HGETALL', $key);
    return { @$list };
}

# field name of an hour bucket: dims joined by \x1f, then |metric
sub hfield {
    my ($dims, $metric) = @_;
    my @d = @$dims;
    push @d, '' while @d < 6;
    return join($SEP, @d) . "|$metric";
}

# adds counters: key => [ [dims or user string], { metric => n, ... } ]
sub add {
    my ($self, $key, $who, $metrics) = @_;
    for my $m (sort keys %$metrics) {
        my $f = ref $who ? hfield($who, $m) : "$who|$m";
        $self->cmd('HINCRBY', $key, $f, $metrics->{$m});
    }
}

sub log_text {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return '';
    local $/;
    return <$fh>;
}

# lines of the server log that point at a fault of the server or client
sub log_problems {
    my ($self) = @_;
    return grep { /crash|panic|assert|protocol error|bad protocol|oom/i }
        split /\n/, $self->log_text;
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    eval { $self->cmd('SHUTDOWN', 'NOSAVE') };
    close $self->{sock} if $self->{sock};
    for (1 .. 100) {
        last if waitpid($self->{pid}, WNOHANG) == $self->{pid};
        sleep 0.05;
    }
    kill 'TERM', $self->{pid} if kill 0, $self->{pid};
    waitpid($self->{pid}, 0);
    delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

# kroute-agg binary of this tree (KROUTE_AGG overrides)
sub agg_bin {
    return $ENV{KROUTE_AGG} // "$FindBin::Bin/../build/kroute-agg";
}

# runs kroute-agg; returns (exit code, stdout, stderr).  With
# KROUTE_AGG_VALGRIND set it runs under valgrind memcheck and a memory
# error or leak turns into exit code 99.
sub agg {
    my (@args) = @_;
    my $dir = tempdir(CLEANUP => 1);
    my @cmd = (agg_bin(), @args);

    if ($ENV{KROUTE_AGG_VALGRIND}) {
        unshift @cmd, 'valgrind', '-q', '--leak-check=full',
            '--show-leak-kinds=definite,indirect,possible',
            '--errors-for-leak-kinds=definite,indirect,possible',
            '--error-exitcode=99';
    }

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$dir/out" or die;
        open STDERR, '>', "$dir/err" or die;
        exec { $cmd[0] } @cmd or POSIX::_exit(127);
    }

    waitpid($pid, 0);
    my $rc = $? >> 8;
    my ($out, $err) = map {
        open my $fh, '<', "$dir/$_" or die; local $/; my $s = <$fh>;
        $s // '' } qw(out err);

    return ($rc, $out, $err);
}

1;
