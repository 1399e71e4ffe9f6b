package Kroute::Mock;

# Copyright (C) kroute authors
#
# A mock OpenAI / Anthropic provider for the kroute tests.  It replays the
# recorded provider replies in t/fixtures/providers byte for byte, lets a
# test decide how the reply is cut into writes, how slowly it is sent,
# whether it is gzipped or aborted, and records every request it receives
# (method, path, headers, body) as one JSON line per request so a test can
# check what the gateway actually sent upstream.
#
# Reply selection, by request header:
#   X-Mock-Reply: <fixture file name>    which fixture to send
#   X-Mock-Status: <code>                status (default from the name:
#                                        "*-error-429-*" -> 429, else 200)
#   X-Mock-Chunk: N | event | o1,o2,... | random:SEED
#                                        bytes per write, one SSE event per
#                                        write, split offsets, or random
#                                        writes of 1..64 bytes
#   X-Mock-Delay-Ms: N                   sleep between writes
#   X-Mock-Gzip: 1                       Content-Encoding: gzip
#   X-Mock-Cut-After: N                  close after N body bytes
#   X-Mock-Raw: 1                        send a stream fixture as is, even
#                                        when the request did not ask for
#                                        stream_options.include_usage
# Without X-Mock-Reply the path and body pick a default fixture.
#
# A streamed OpenAI fixture normally carries the usage chunk; like the real
# API, the mock drops it unless the request asked for it with
# stream_options.include_usage: true.

use strict;
use warnings;

use Fcntl qw(:flock);
use File::Basename qw(dirname);
use File::Spec;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(sleep time);

our $VERSION = '0.01';

my $T_DIR = File::Spec->rel2abs(
    File::Spec->catdir(dirname(__FILE__), '..', '..'));

# mock servers this process started, stopped however the test ends
my %RUNNING;

END {
    local $?;
    for my $m (values %RUNNING) {
        $m->stop if $m && $m->{parent} == $$;
    }
}


sub fixtures_dir {
    return File::Spec->catdir($T_DIR, 'fixtures', 'providers');
}


sub fixture {
    my ($name) = @_;
    my $path = File::Spec->catfile(fixtures_dir(), $name);
    open my $fh, '<:raw', $path or die "cannot open fixture $path: $!\n";
    local $/;
    my $data = <$fh>;
    close $fh;
    return $data;
}


# ---- client side: start, stop, read the request log -------------------

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or die "cannot bind a free port: $!\n";
    my $port = $s->sockport;
    close $s;
    return $port;
}


sub start {
    my ($class, %opt) = @_;
    my $dir = $opt{dir} or die "Kroute::Mock->start needs dir\n";
    my $name = $opt{name} || 'mock';
    my $port = $opt{port} || free_port();
    my $log = File::Spec->catfile($dir, "$name-requests.jsonl");
    my $err = File::Spec->catfile($dir, "$name.stderr");
    my $script = File::Spec->catfile($T_DIR, 'mock-provider.pl');

    open my $touch, '>', $log or die "cannot create $log: $!\n";
    close $touch;

    my $pid = fork;
    die "fork failed: $!\n" unless defined $pid;
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>>', $err;
        { exec $^X, $script, '--port', $port, '--log', $log,
              '--fixtures', ($opt{fixtures} || fixtures_dir()); }
        POSIX::_exit(127);
    }

    my $self = bless { pid => $pid, port => $port, log => $log,
                       name => $name, stderr => $err, parent => $$ },
                     $class;

    $RUNNING{"$self"} = $self;

    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port, Proto => 'tcp');
        if ($s) {
            close $s;
            return $self;
        }
        last if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    die "mock provider did not start on port $port, see $err\n";
}


sub port { $_[0]{port} }

sub url { 'http://127.0.0.1:' . $_[0]{port} }


sub requests {
    my ($self) = @_;
    my $c = $self->{cache} ||= { offset => 0, list => [] };
    open my $fh, '<:raw', $self->{log} or return ();
    seek $fh, $c->{offset}, 0;
    while (my $line = <$fh>) {
        last unless $line =~ /\n$/;
        $c->{offset} += length $line;
        next unless $line =~ /\S/;
        push @{ $c->{list} }, JSON::PP->new->decode($line);
    }
    close $fh;
    return @{ $c->{list} };
}


sub last_request {
    my ($self) = @_;
    my @r = $self->requests;
    return $r[-1];
}


# requests whose X-Kroute-Test-Id (or any header) matches, waiting a little
# for the log line: the mock writes it before replying, so it is normally
# there already

sub request_by_header {
    my ($self, $header, $value) = @_;
    $header = lc $header;
    for (1 .. 20) {
        for my $r (reverse $self->requests) {
            my $v = $r->{headers}{$header};
            return $r if defined $v && $v eq $value;
        }
        sleep 0.05;
    }
    return undef;
}


sub clear {
    my ($self) = @_;
    open my $fh, '>', $self->{log} or die "cannot truncate $self->{log}\n";
    close $fh;
    delete $self->{cache};
}


sub stop {
    my ($self) = @_;
    delete $RUNNING{"$self"};
    return unless $self->{pid};
    kill 'TERM', $self->{pid};
    for (1 .. 50) {
        last if waitpid($self->{pid}, WNOHANG) != 0;
        sleep 0.05;
    }
    if (kill 0, $self->{pid}) {
        kill 'KILL', $self->{pid};
        waitpid($self->{pid}, 0);
    }
    delete $self->{pid};
}


sub DESTROY {
    my ($self) = @_;
    local $?;
    $self->stop if $self->{pid} && $self->{parent} == $$;
}


# ---- server side --------------------------------------------------------

sub serve {
    my (%opt) = @_;
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                       LocalPort => $opt{port},
                                       Proto => 'tcp', Listen => 128,
                                       ReuseAddr => 1)
        or die "mock: cannot listen on 127.0.0.1:$opt{port}: $!\n";

    my %kids;
    local $SIG{TERM} = sub {
        kill 'TERM', keys %kids;
        exit 0;
    };
    local $SIG{CHLD} = sub {
        while ((my $k = waitpid(-1, WNOHANG)) > 0) {
            delete $kids{$k};
        }
    };

    while (1) {
        my $c = $listen->accept;
        next unless $c;
        my $pid = fork;
        if (!defined $pid) {
            close $c;
            next;
        }
        if ($pid == 0) {
            local $SIG{TERM} = 'DEFAULT';
            local $SIG{CHLD} = 'DEFAULT';
            close $listen;
            eval { handle_connection($c, \%opt) };
            warn "mock: $@" if $@;
            close $c;
            POSIX::_exit(0);
        }
        $kids{$pid} = 1;
        close $c;
    }
}


sub read_request {
    my ($c) = @_;
    my $buf = '';

    while ($buf !~ /\r?\n\r?\n/) {
        my $n = sysread($c, $buf, 65536, length $buf);
        return undef unless $n;
        return undef if length $buf > 1 << 20;
    }

    my ($head, $rest) = split /\r?\n\r?\n/, $buf, 2;
    my @lines = split /\r?\n/, $head;
    my $start = shift @lines;
    my ($method, $target, $version) = split / /, $start;
    my (%h, @order);
    for my $l (@lines) {
        my ($k, $v) = $l =~ /^([^:]+):\s*(.*?)\s*$/ or next;
        $k = lc $k;
        push @order, [$k, $v];
        $h{$k} = exists $h{$k} ? "$h{$k}, $v" : $v;
    }

    my $body = '';
    if (($h{'transfer-encoding'} || '') =~ /chunked/i) {
        my $data = $rest;
        while (1) {
            if ($data =~ /^([0-9a-fA-F]+)[^\r\n]*\r\n/) {
                my $size = hex $1;
                my $hl = length $&;
                if ($size == 0) {
                    last if $data =~ /^[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n/;
                } elsif (length($data) >= $hl + $size + 2) {
                    $body .= substr($data, $hl, $size);
                    $data = substr($data, $hl + $size + 2);
                    next;
                }
            }
            my $n = sysread($c, $data, 65536, length $data);
            last unless $n;
        }
    } elsif (defined $h{'content-length'}) {
        my $len = $h{'content-length'};
        $body = $rest;
        while (length $body < $len) {
            my $n = sysread($c, $body, $len - length $body, length $body);
            last unless $n;
        }
    }

    my ($path, $query) = split /\?/, $target, 2;
    return { method => $method, target => $target, path => $path,
             query => $query, version => $version, headers => \%h,
             header_list => \@order, body => $body };
}


sub log_request {
    my ($file, $req) = @_;
    my %rec = %$req;
    $rec{time} = time;
    my $json = eval { JSON::PP->new->decode($req->{body}) };
    $rec{json} = $json if ref $json;
    my $line = JSON::PP->new->canonical->encode(\%rec) . "\n";
    open my $fh, '>>:raw', $file or return;
    flock $fh, LOCK_EX;
    print $fh $line;
    close $fh;
}


sub default_reply {
    my ($req) = @_;
    my $json = eval { JSON::PP->new->decode($req->{body}) } || {};
    my $stream = ref $json eq 'HASH' && $json->{stream}
                 && JSON::PP::is_bool($json->{stream}) ? $json->{stream} : 0;

    if ($req->{path} =~ m{/models$}) {
        return 'models';
    }
    if ($req->{path} =~ m{/messages$}) {
        return $stream ? 'anthropic-messages-sse-basic.sse'
                       : 'anthropic-messages-resp-cache-read-1111.json';
    }
    return $stream ? 'openai-chat-sse-include-usage-reasoning.sse'
                   : 'openai-chat-resp-plain-reasoning-model.json';
}


# drop the usage chunk of an OpenAI stream, as the API does when the
# request did not ask for stream_options.include_usage

sub strip_usage_chunk {
    my ($data) = @_;
    my @events = split /(?<=\n\n)/, $data;
    my @keep = grep {
        !(/^data: \{/ && /"choices":\s*\[\]/ && /"usage":\s*\{/)
    } @events;
    return join '', @keep;
}


sub split_body {
    my ($body, $spec, $is_sse) = @_;
    my @parts;

    if (!defined $spec || $spec eq '') {
        return $is_sse ? split_body($body, 'event', 1) : ($body);
    }
    if ($spec eq 'event') {
        @parts = split /(?<=\n\n)/, $body;
        return @parts ? @parts : ($body);
    }
    if ($spec =~ /^random:(\d+)$/) {
        srand($1);
        my $off = 0;
        while ($off < length $body) {
            my $n = 1 + int(rand(64));
            push @parts, substr($body, $off, $n);
            $off += $n;
        }
        return @parts;
    }
    if ($spec =~ /^\d+$/ && $spec > 0) {
        for (my $off = 0; $off < length $body; $off += $spec) {
            push @parts, substr($body, $off, $spec);
        }
        return @parts;
    }
    if ($spec =~ /^\d+(,\d+)*$/) {
        my $prev = 0;
        for my $o (sort { $a <=> $b } split /,/, $spec) {
            next if $o <= $prev || $o >= length $body;
            push @parts, substr($body, $prev, $o - $prev);
            $prev = $o;
        }
        push @parts, substr($body, $prev);
        return @parts;
    }
    return ($body);
}


my %REASON = (200 => 'OK', 400 => 'Bad Request', 401 => 'Unauthorized',
              404 => 'Not Found', 413 => 'Payload Too Large',
              429 => 'Too Many Requests', 500 => 'Internal Server Error',
              502 => 'Bad Gateway', 503 => 'Service Unavailable',
              529 => 'Overloaded');


sub write_all {
    my ($c, $data) = @_;
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite($c, $data, length($data) - $off, $off);
        die "write failed: $!\n" unless defined $n;
        $off += $n;
    }
}


sub handle_connection {
    my ($c, $opt) = @_;

    setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);

    my $req = read_request($c) or return;
    log_request($opt->{log}, $req);

    my $h = $req->{headers};
    my $name = $h->{'x-mock-reply'} || default_reply($req);
    my ($status, $body, $ctype);

    if ($name eq 'models') {
        $status = 200;
        $ctype = 'application/json';
        $body = '{"object":"list","data":[]}';
    } elsif ($name =~ m{[/\\]} || $name =~ /^\./
             || !-f File::Spec->catfile($opt->{fixtures}, $name))
    {
        $status = 404;
        $ctype = 'application/json';
        $body = '{"error":{"message":"mock: no fixture ' . $name
              . '","type":"mock_error","param":null,"code":null}}';
    } else {
        open my $fh, '<:raw', File::Spec->catfile($opt->{fixtures}, $name)
            or die "cannot open $name: $!\n";
        local $/;
        $body = <$fh>;
        close $fh;
        $status = $name =~ /-error-(\d{3})-/ ? $1 : 200;
        $ctype = $name =~ /\.sse$/ ? 'text/event-stream'
                                   : 'application/json';
    }

    $status = $h->{'x-mock-status'} if ($h->{'x-mock-status'} || '')
                                       =~ /^\d{3}$/;

    my $is_sse = $ctype eq 'text/event-stream';
    if ($is_sse && $name =~ /^openai-/ && !$h->{'x-mock-raw'}) {
        my $json = eval { JSON::PP->new->decode($req->{body}) };
        my $want = ref $json eq 'HASH' && ref $json->{stream_options}
                   && $json->{stream_options}{include_usage};
        $body = strip_usage_chunk($body) unless $want;
    }

    my @extra;
    if ($h->{'x-mock-gzip'}) {
        require IO::Compress::Gzip;
        my $gz;
        IO::Compress::Gzip::gzip(\$body => \$gz)
            or die "gzip failed\n";
        $body = $gz;
        push @extra, 'Content-Encoding: gzip';
    }

    my $chunked = $is_sse && ($req->{version} || '') eq 'HTTP/1.1';
    my @parts = split_body($body, $h->{'x-mock-chunk'}, $is_sse);
    my $delay = ($h->{'x-mock-delay-ms'} || 0) / 1000;
    my $cut = $h->{'x-mock-cut-after'};

    my $head = "HTTP/1.1 $status " . ($REASON{$status} || 'Status') . "\r\n"
             . "Content-Type: $ctype\r\n"
             . "Connection: close\r\n"
             . join('', map { "$_\r\n" } @extra);
    if ($is_sse) {
        $head .= "Cache-Control: no-cache\r\n";
        $head .= "Transfer-Encoding: chunked\r\n" if $chunked;
    } else {
        $head .= "Content-Length: " . length($body) . "\r\n";
    }
    $head .= "X-Mock-Fixture: $name\r\n\r\n";

    if (!$is_sse && @parts == 1) {
        write_all($c, $head . $body) unless defined $cut;
        write_all($c, $head . substr($body, 0, $cut)) if defined $cut;
        return;
    }

    write_all($c, $head);

    my $sent = 0;
    for my $i (0 .. $#parts) {
        my $p = $parts[$i];
        next unless length $p;
        if (defined $cut && $sent + length($p) >= $cut) {
            $p = substr($p, 0, $cut - $sent);
            write_all($c, $chunked ? sprintf("%x\r\n%s\r\n", length $p, $p)
                                   : $p) if length $p;
            return;
        }
        sleep $delay if $delay && $i > 0;
        write_all($c, $chunked ? sprintf("%x\r\n%s\r\n", length $p, $p) : $p);
        $sent += length $p;
    }
    write_all($c, "0\r\n\r\n") if $chunked;
}


1;
