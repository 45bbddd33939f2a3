"""pywork: the Python workload of crtools' end-to-end tests.

A Python 3 interpreter holding a large dict and looping, speaking the
harness protocol (see test/harness/doc.go): CRT_READY, CRT_RESULT,
CRT_STARTS; SIGUSR1 verify, SIGUSR2 verify and exit.

Verify checks the dict's size and a checksum of its contents, a list built
from it, that the loop counter kept growing, and the PID and start token.
The argument, if given, is the number of dict entries (default 200000).
"""
import os
import signal
import sys
import time
import zlib

ready_path = os.environ["CRT_READY"]
result_path = os.environ["CRT_RESULT"]
starts_path = os.environ["CRT_STARTS"]

pid = os.getpid()
token = int.from_bytes(os.urandom(8), "little")
with open(starts_path, "a") as f:
    f.write("%d %016x\n" % (pid, token))

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000


def value(i):
    return "v%07d-%x" % (i, (i * 2654435761) & 0xFFFFFFFF)


def checksum(d):
    c = 0
    for k in sorted(d):
        c = zlib.crc32(("%d=%s;" % (k, d[k])).encode(), c)
    return c


big = {i: value(i) for i in range(n)}
squares = [i * i for i in range(0, n, 7)]
want_sum = checksum(big)
want_squares = sum(squares)

requests = []


def on_signal(signum, frame):
    requests.append(signum)


signal.signal(signal.SIGUSR1, on_signal)
signal.signal(signal.SIGUSR2, on_signal)


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


write_atomic(ready_path, "%d\n" % pid)

counter = 0
last = 0
reports = 0  # the first verify may come before any work was done
while True:
    while requests:
        sig = requests.pop(0)
        fails = []
        if os.getpid() != pid:
            fails.append("pid %d, was %d at start" % (os.getpid(), pid))
        if len(big) != n:
            fails.append("dict has %d entries, want %d" % (len(big), n))
        for k in (0, 1, n // 2, n - 1):
            if big.get(k) != value(k):
                fails.append("dict[%d] = %r, want %r" % (k, big.get(k), value(k)))
                break
        if checksum(big) != want_sum:
            fails.append("dict checksum changed")
        if sum(squares) != want_squares:
            fails.append("list of squares changed")
        if reports and counter <= last:
            fails.append("no progress since the previous verify (%d)" % counter)
        last = counter
        reports += 1
        if fails:
            write_atomic(result_path, "FAIL " + "; ".join(fails) + "\n")
        else:
            write_atomic(result_path, "PASS token=%016x progress=%d\n" % (token, counter))
        if sig == signal.SIGUSR2:
            sys.exit(1 if fails else 0)
    # Work: touch the dict, then sleep a little.
    k = counter % n
    if big[k] != value(k):
        write_atomic(result_path, "FAIL dict[%d] changed while running\n" % k)
    counter += 1
    time.sleep(0.001)
