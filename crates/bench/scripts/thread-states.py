#!/usr/bin/env python3
"""Where a server's threads spend their time: on a CPU, waiting for one, asleep, or waiting
for the disk, from /proc alone (no perf, no root).

    crates/bench/scripts/thread-states.py PID [--seconds S] [--thread NAME] [--every MS]

Run it while a load runs against the server PID (for a server started by `trueline-bench
--spawn`: `pgrep -f -- '--bind 127.0.0.1:0'`). Two readings:

1. Per thread name, from `/proc/PID/task/*/schedstat` at the start and the end: the share of
   the wall time on a CPU and waiting in the run queue (summed over the threads of a name,
   so the runtime's workers can exceed 100 %).
2. For `--thread` (default `delta-combiner`), its state and kernel wait channel
   (`/proc/PID/task/TID/stat` and `wchan`) sampled every `--every` ms: `R` running or
   runnable, `S` asleep (`do_epoll_wait`: its runtime waiting for work; `futex_do_wait`: a
   lock or a condition), `D` waiting for the disk (`submit_bio_wait`: a cache flush;
   `folio_wait_bit*`: pages being written back).

See docs/benchmarks.md, "2026-12-05". Standard library only.
"""

import argparse
import collections
import os
import sys
import time


def schedstat(pid):
    """{tid: (name, ns on a CPU, ns waiting for one)} of every thread of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                on_cpu, waiting, _ = (int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[tid] = (name, on_cpu, waiting)
    return out


def find_thread(pid, name):
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == name:
                    return tid
        except FileNotFoundError:
            continue
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pid", type=int)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--thread", default="delta-combiner")
    p.add_argument("--every", type=float, default=0.5, help="milliseconds between samples")
    args = p.parse_args()

    tid = find_thread(args.pid, args.thread)
    if tid is None:
        print(f"no thread named {args.thread!r} in process {args.pid}", file=sys.stderr)
    before = schedstat(args.pid)
    started = time.monotonic()
    states = collections.Counter()
    samples = 0
    while time.monotonic() - started < args.seconds:
        if tid is not None:
            try:
                with open(f"/proc/{args.pid}/task/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                with open(f"/proc/{args.pid}/task/{tid}/wchan") as f:
                    wchan = f.read().strip()
            except FileNotFoundError:
                break
            states[(state, "" if wchan == "0" else wchan)] += 1
            samples += 1
        time.sleep(args.every / 1000)
    elapsed_ns = (time.monotonic() - started) * 1e9
    after = schedstat(args.pid)

    by_name = collections.defaultdict(lambda: [0, 0, 0])
    for t, (name, on_cpu, waiting) in after.items():
        if t in before:
            row = by_name[name]
            row[0] += 1
            row[1] += on_cpu - before[t][1]
            row[2] += waiting - before[t][2]
    print(f"threads of {args.pid} over {elapsed_ns / 1e9:.1f} s (% of the wall time)")
    print(f"{'name':24} {'threads':>7} {'on a CPU':>9} {'run queue':>9}")
    for name, (n, on_cpu, waiting) in sorted(by_name.items(), key=lambda kv: -kv[1][1]):
        if on_cpu / elapsed_ns >= 0.001:
            print(f"{name:24} {n:7d} {100 * on_cpu / elapsed_ns:8.1f}% {100 * waiting / elapsed_ns:8.1f}%")
    if samples:
        print(f"\n{args.thread} (thread {tid}), {samples} samples: state, wait channel")
        for (state, wchan), n in states.most_common(12):
            print(f"{100 * n / samples:6.1f}%  {state}  {wchan}")


if __name__ == "__main__":
    main()
