#!/usr/bin/perl
# check.pl FILE: reads what counter.pl printed and says, in one line,
# whether it ran as one process from start to end: started once, every
# tick from 1 on exactly once and in order, the same PID and memory token
# on every line, a running sum that adds up, a pause in the middle (where
# it was checkpointed, killed and restored) and the final line. Exit 0 if
# so, 1 with the first thing wrong.
use strict;
use warnings;

@ARGV == 1 or die "usage: check.pl FILE\n";
my $file = $ARGV[0];
open(my $in, "<", $file) or die "check.pl: open $file: $!\n";
my @lines = <$in>;
close $in;

sub fail { print "FAIL: $_[0]\n"; exit 1 }

my ($pid, $token, $n, $sum, $pausedAt, $done) = (undef, undef, 0, 0, undef, 0);
for my $l (@lines) {
    if ($l =~ /^counter (\d+) started \(memory token (\w+)\)$/) {
        fail("the counter started more than once (a restart, not a restore)") if defined $pid;
        ($pid, $token) = ($1, $2);
    } elsif ($l =~ /^tick (\d+) \(pid (\d+), token (\w+), sum (\d+)\)(.*)$/) {
        fail("a tick before the counter started") unless defined $pid;
        $n++;
        $sum += $n;
        fail("tick $1 where tick $n was due") if $1 != $n;
        fail("tick $n printed by pid $2, the counter is pid $pid") if $2 != $pid;
        fail("tick $n has memory token $3, the counter drew $token") if $3 ne $token;
        fail("tick $n says sum $4, the ticks add up to $sum") if $4 != $sum;
        $pausedAt //= $n if $5 =~ /pause/;
    } elsif ($l =~ /^counter (\d+) done: (\d+) ticks, sum (\d+), token (\w+)$/) {
        fail("the counter did not finish cleanly") unless defined $pid && $1 == $pid && $2 == $n && $3 == $sum && $4 eq $token;
        $done = 1;
    } else {
        chomp $l;
        fail("unexpected line: $l");
    }
}
fail("the counter never started") unless defined $pid;
fail("the counter did not finish (last tick $n)") unless $done;
fail("no pause: the counter was not stopped in the middle of its run") unless defined $pausedAt;
printf("OK: the restored counter carried on from where it was checkpointed: pid %d, memory token %s, ticks 1-%d once each, resumed at tick %d with its running sum\n",
    $pid, $token, $n, $pausedAt);
