#!/usr/bin/perl
# counter: the small program of crtools' demo (examples/demo.yaml).
#
#   counter.pl [TICKS]        (default 15)
#
# It counts TICKS ticks, five a second, and prints one line per tick with
# its PID and what it keeps in memory only: a random token drawn at start
# and the running sum of the ticks. A restarted counter would print
# "started" again, count from 1 and draw another token; a restored one
# goes on with the same PID, token and sum. It also measures the time
# between ticks and points out a pause (a checkpoint and restore in the
# middle of its run). check.pl reads its output and says whether it
# carried on.
#
# Written in perl because perl-base is part of every Debian system: the
# demo needs nothing installed beyond what runs crtools itself.
use strict;
use warnings;

my $ticks = @ARGV ? $ARGV[0] : 15;
die "usage: counter.pl [TICKS]\n" unless $ticks =~ /^[1-9][0-9]*$/;

# CLOCK_MONOTONIC through the raw system call (x86-64 number 228):
# Time::HiRes is not in perl-base.
sub now {
    my $ts = pack("q2", 0, 0);
    syscall(228, 1, $ts) == 0 or die "clock_gettime: $!\n";
    my ($s, $ns) = unpack("q2", $ts);
    return $s + $ns / 1e9;
}

$| = 1;
# One run per output file: a rerun of the demo starts it afresh (crtools
# opens it for appending).
truncate(STDOUT, 0) if -f STDOUT;

my $token = sprintf("%06x", int(rand(0x1000000)));
my $sum = 0;
print "counter $$ started (memory token $token)\n";
my $prev = now();
for my $i (1 .. $ticks) {
    $sum += $i;
    my $t = now();
    my $gap = $t - $prev;
    $prev = $t;
    my $note = "";
    $note = sprintf("   <- went on after a %.1fs pause", $gap) if $gap > 0.6;
    print "tick $i (pid $$, token $token, sum $sum)$note\n";
    select(undef, undef, undef, 0.2);
}
print "counter $$ done: $ticks ticks, sum $sum, token $token\n";
