package Kroute::RedisServer;

# Copyright (C) kroute authors
#
# Redis for the module's tests: starts private redis-server processes on
# loopback ports (a given one, to restart a server in place, or a free
# one), stops, pauses and kills them, talks RESP to them with a bounded
# wait, builds a small Redis Cluster, and runs a TCP proxy that can lose
# the replies to EVAL so that a test sees a batch applied whose answer
# never came back.  Every process started here is killed at exit.

use strict;
use warnings;

use Exporter qw(import);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(free_port wait_for hfield);

our $SEP = "\x1f";

my %CHILDREN;


sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or die "cannot bind a free port: $!\n";
    my $port = $s->sockport;
    close $s;
    return $port;
}


# wait_for(sub { ... }, $seconds): polls every 50 ms until the sub
# returns true or the time is up; returns the last value

sub wait_for {
    my ($cond, $secs) = @_;
    my $deadline = time + ($secs || 5);
    my $v;
    while (1) {
        $v = $cond->();
        return $v if $v || time > $deadline;
        sleep 0.05;
    }
}


# hour bucket field: six dimensions joined by 0x1f, then |metric

sub hfield {
    my ($dims, $metric) = @_;
    my @d = @$dims;
    push @d, '' while @d < 6;
    return join($SEP, @d) . "|$metric";
}


sub spawn {
    my (%opt) = @_;
    my $pid = fork;
    die "fork failed: $!\n" unless defined $pid;
    if ($pid == 0) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $opt{log};
        open STDERR, '>&', \*STDOUT;
        if ($opt{code}) {
            $opt{code}->();
            POSIX::_exit(0);
        }
        { exec @{ $opt{cmd} }; }
        POSIX::_exit(127);
    }
    $CHILDREN{$pid} = $$;
    return $pid;
}


sub reap {
    my ($pid, $secs) = @_;
    my $deadline = time + ($secs || 5);
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) != 0) {
            delete $CHILDREN{$pid};
            return 1;
        }
        sleep 0.02;
    }
    return 0;
}


END {
    local $?;
    for my $pid (keys %CHILDREN) {
        next unless $CHILDREN{$pid} == $$;
        kill 'CONT', $pid;
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
}


# ---- one redis-server ----------------------------------------------------

# start(port => N, dir => D, args => [...], password => P): a
# redis-server without persistence; port and dir default to a free port
# and a temporary dir; with a password the client here logs in first

sub start {
    my ($class, %opt) = @_;
    my $self = bless {
        port => $opt{port} || free_port(),
        dir => $opt{dir} || tempdir('kroute-redis-XXXXXX', TMPDIR => 1,
                                    CLEANUP => 1),
        args => $opt{args} || [],
        password => $opt{password},
    }, $class;
    push @{ $self->{args} }, '--requirepass', $opt{password}
        if defined $opt{password};
    $self->launch;
    return $self;
}


sub launch {
    my ($self) = @_;
    my $d = $self->{dir};

    $self->{pid} = spawn(log => "$d/redis.log", cmd => [
        'redis-server', '--port', $self->{port}, '--bind', '127.0.0.1',
        '--save', '', '--appendonly', 'no', '--daemonize', 'no',
        '--dir', $d, @{ $self->{args} } ]);

    my $ok = wait_for(sub {
        my $pong = eval { $self->cmd('PING') };
        return defined $pong && $pong eq 'PONG';
    }, 10);
    die "redis-server did not start on port $self->{port}:\n"
        . $self->log_text unless $ok;
    return $self;
}


sub port { $_[0]{port} }

sub pid { $_[0]{pid} }

sub dir { $_[0]{dir} }

sub addr { '127.0.0.1:' . $_[0]{port} }


sub log_text {
    my ($self) = @_;
    open my $fh, '<', "$self->{dir}/redis.log" or return '';
    local $/;
    return <$fh>;
}


# SIGSTOP / SIGCONT: the socket stays open, nothing is answered

sub pause { kill 'STOP', $_[0]{pid} }

sub resume { kill 'CONT', $_[0]{pid} }


# SIGKILL: everything the server held is gone

sub kill_hard {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    delete $self->{sock};
    kill 'CONT', $pid;
    kill 'KILL', $pid;
    reap($pid, 5) or die "redis-server $pid did not die\n";
}


# a new empty server on the same port

sub restart {
    my ($self) = @_;
    $self->kill_hard if $self->{pid};
    return $self->launch;
}


sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    delete $self->{sock};
    kill 'CONT', $pid;
    kill 'TERM', $pid;
    return if reap($pid, 5);
    kill 'KILL', $pid;
    reap($pid, 5);
}


sub DESTROY {
    my ($self) = @_;
    local $?;
    $self->stop if $self->{pid};
}


# cmd(@args): one command; dies on an error reply ("redis error: ...")
# or when no reply comes within 2 s; the connection is made again after
# any failure

sub cmd {
    my ($self, @args) = @_;

    my $s = $self->{sock};
    if (!$s) {
        $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                   PeerPort => $self->{port},
                                   Proto => 'tcp', Timeout => 2)
            or die "cannot connect to redis port $self->{port}: $!\n";
        $self->{sock} = $s;
        $self->{buf} = '';
        $self->cmd('AUTH', $self->{password}) if defined $self->{password};
    }

    my $req = '*' . scalar(@args) . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for @args;

    my $reply = eval {
        local $SIG{PIPE} = 'IGNORE';
        my $off = 0;
        while ($off < length $req) {
            my $n = syswrite($s, $req, length($req) - $off, $off);
            die "redis write failed: $!\n" unless $n;
            $off += $n;
        }
        my $deadline = time + 2;
        my $sel = IO::Select->new($s);
        while (1) {
            my ($v, $used) = parse_reply($self->{buf}, 0);
            if (defined $used) {
                substr($self->{buf}, 0, $used) = '';
                die $v->{error} . "\n" if ref $v eq 'HASH' && $v->{error};
                return $v;
            }
            my $left = $deadline - time;
            die "no reply from redis within 2s\n"
                if $left <= 0 || !$sel->can_read($left);
            my $n = sysread($s, $self->{buf}, 65536, length $self->{buf});
            die "redis closed the connection\n" unless $n;
        }
    };

    if ($@) {
        my $err = $@;
        delete $self->{sock} unless $err =~ /^redis error/;
        die $err;
    }
    return $reply;
}


# parse_reply($buf, $offset) -> ($value, $bytes used) or () if incomplete;
# an error reply is { error => "redis error: ..." }

sub parse_reply {
    my ($buf, $off) = @_;
    my $end = index $buf, "\r\n", $off;
    return () if $end < 0;
    my $type = substr($buf, $off, 1);
    my $rest = substr($buf, $off + 1, $end - $off - 1);
    my $next = $end + 2;

    return ($rest, $next - $off) if $type eq '+';
    return ({ error => "redis error: $rest" }, $next - $off) if $type eq '-';
    return ($rest + 0, $next - $off) if $type eq ':';

    if ($type eq '$') {
        return (undef, $next - $off) if $rest < 0;
        return () if length($buf) < $next + $rest + 2;
        return (substr($buf, $next, $rest), $next + $rest + 2 - $off);
    }

    if ($type eq '*') {
        return (undef, $next - $off) if $rest < 0;
        my @list;
        my $pos = $next;
        for (1 .. $rest) {
            my ($v, $used) = parse_reply($buf, $pos);
            return () unless defined $used;
            push @list, $v;
            $pos += $used;
        }
        return (\@list, $pos - $off);
    }

    die "bad redis reply: " . substr($buf, $off, 40) . "\n";
}


# parse_command($buf, $offset) -> (uc name, bytes used) or () if
# incomplete; clients send commands as RESP arrays of bulk strings

sub parse_command {
    my ($buf, $off) = @_;
    my ($v, $used) = parse_reply($buf, $off);
    return () unless defined $used;
    my $name = ref $v eq 'ARRAY' && defined $v->[0] ? uc $v->[0] : '';
    return ($name, $used);
}


sub hgetall {
    my ($self, $key) = @_;
    my $list = $self->cmd('HGETALL', $key) || [];
    return { @$list };
}


# ---- a Redis Cluster of masters only -------------------------------------

# cluster(n => 3): n masters holding all 16384 slots; returns the servers

sub cluster {
    my ($class, %opt) = @_;
    my $n = $opt{n} || 3;
    my @nodes;

    for my $i (1 .. $n) {
        my $dir = tempdir('kroute-redis-cluster-XXXXXX', TMPDIR => 1,
                          CLEANUP => 1);
        push @nodes, $class->start(dir => $dir, args => [
            '--cluster-enabled', 'yes',
            '--cluster-config-file', "$dir/nodes.conf",
            '--cluster-node-timeout', '5000' ]);
    }

    my $log = "$nodes[0]{dir}/cluster-create.log";
    my $pid = spawn(log => $log, cmd => [
        'redis-cli', '--cluster', 'create', (map { $_->addr } @nodes),
        '--cluster-replicas', '0', '--cluster-yes' ]);
    reap($pid, 20) or die "redis-cli --cluster create did not finish\n";
    die "redis-cli --cluster create failed: exit " . ($? >> 8) . "\n"
        if $?;

    my $ok = wait_for(sub {
        for my $node (@nodes) {
            my $info = eval { $node->cmd('CLUSTER', 'INFO') } || '';
            return 0 unless $info =~ /cluster_state:ok/;
        }
        return 1;
    }, 20);
    die "redis cluster did not reach state ok\n" unless $ok;

    return @nodes;
}


# the node of @nodes that serves $slot, from CLUSTER SLOTS

sub slot_owner {
    my ($class, $slot, @nodes) = @_;
    my $slots = $nodes[0]->cmd('CLUSTER', 'SLOTS');
    for my $range (@$slots) {
        my ($lo, $hi, $master) = @$range;
        next unless $slot >= $lo && $slot <= $hi;
        for my $node (@nodes) {
            return $node if $master->[1] == $node->port;
        }
    }
    return undef;
}


# ---- a proxy that loses replies to EVAL ----------------------------------

# proxy(to => PORT, drop_eval_replies => K, dir => D): listens on a free
# port and forwards every client connection to 127.0.0.1:PORT; it reads
# each reply of Redis whole, and for the first K replies to an EVAL it
# closes the client connection instead of relaying it.  The number of
# replies lost so far is in $proxy->dropped.

sub proxy {
    my ($class, %opt) = @_;
    my $dir = $opt{dir} || tempdir('kroute-proxy-XXXXXX', TMPDIR => 1,
                                   CLEANUP => 1);
    my $port = free_port();
    my $count = "$dir/proxy-dropped";
    my $drops = $opt{drop_eval_replies} || 0;

    open my $fh, '>', $count or die "cannot write $count: $!\n";
    print $fh "0\n";
    close $fh;

    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                       LocalPort => $port, Proto => 'tcp',
                                       Listen => 64, ReuseAddr => 1)
        or die "proxy cannot listen on $port: $!\n";

    my $pid = spawn(log => "$dir/proxy.log", code => sub {
        proxy_loop($listen, $opt{to}, $drops, $count);
    });
    close $listen;

    return bless { pid => $pid, port => $port, count => $count },
                 'Kroute::RedisServer::Proxy';
}


sub proxy_loop {
    my ($listen, $to, $drops, $count) = @_;
    my $sel = IO::Select->new($listen);
    my %peer;       # fileno -> session
    my $dropped = 0;

    local $SIG{PIPE} = 'IGNORE';

    my $close = sub {
        my ($s) = @_;
        for my $h ($s->{client}, $s->{server}) {
            $sel->remove($h);
            delete $peer{fileno $h} if defined fileno $h;
            close $h;
        }
    };

    while (1) {
        for my $h ($sel->can_read(1)) {
            if ($h == $listen) {
                my $c = $listen->accept or next;
                my $r = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                              PeerPort => $to,
                                              Proto => 'tcp', Timeout => 2);
                if (!$r) {
                    close $c;
                    next;
                }
                my $s = { client => $c, server => $r, cbuf => '',
                          sbuf => '', names => [] };
                $peer{fileno $c} = $s;
                $peer{fileno $r} = $s;
                $sel->add($c, $r);
                next;
            }

            my $s = $peer{fileno $h} or next;
            my $n = sysread($h, my $buf, 65536);
            if (!$n) {
                $close->($s);
                next;
            }

            if ($h == $s->{client}) {
                $s->{cbuf} .= $buf;
                while (1) {
                    my ($name, $used) = parse_command($s->{cbuf}, 0);
                    last unless defined $used;
                    push @{ $s->{names} }, $name;
                    syswrite($s->{server}, substr($s->{cbuf}, 0, $used));
                    substr($s->{cbuf}, 0, $used) = '';
                }
                next;
            }

            $s->{sbuf} .= $buf;
            while (1) {
                my ($v, $used) = parse_reply($s->{sbuf}, 0);
                last unless defined $used;
                my $name = shift @{ $s->{names} } // '';
                if ($name =~ /^EVAL(?:SHA)?$/ && $dropped < $drops) {
                    $dropped++;
                    open my $fh, '>', $count;
                    print $fh "$dropped\n";
                    close $fh;
                    $close->($s);
                    last;
                }
                syswrite($s->{client}, substr($s->{sbuf}, 0, $used));
                substr($s->{sbuf}, 0, $used) = '';
            }
        }
    }
}


package Kroute::RedisServer::Proxy;

use POSIX qw(WNOHANG);


sub port { $_[0]{port} }


sub dropped {
    my ($self) = @_;
    open my $fh, '<', $self->{count} or return 0;
    my $n = <$fh>;
    close $fh;
    return defined $n ? $n + 0 : 0;
}


sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'KILL', $pid;
    Kroute::RedisServer::reap($pid, 5);
}


sub DESTROY {
    my ($self) = @_;
    local $?;
    $self->stop if $self->{pid};
}


1;
