#!/usr/bin/env python3
"""What a constant-rate defence must cost at least, from recorded traces.

Reads the traces of an undefended run (`usocks wfbench -policies off
-traces`, file off-LINK.traces) and, for each rate R (cells/s), replays
every load's download through a sender that sends one 1448-byte cell
every 1/R from the load's first packet until its last data byte is out,
data if any waits, else a dummy: the pauses inside a page are covered,
nothing more (no idle after the data, no volume buckets, no upload, no
headers). Prints the dummies as a share of the download's bytes over all
loads, and the median stretch of the download's duration. The page's
own timing is taken as recorded: the later requests a slower download
would cause are not modelled, so both figures are lower bounds.

    python3 ratebound.py OUT/off-50mbit.traces 1000 1500 2000 3000
"""
import statistics
import sys

CELL = 1448
BODY = CELL - 40  # payload of a one-cell record


def loads(path):
    for line in open(path):
        f = line.split()
        pk = [tuple(map(int, p.split(":"))) for p in f[4:]]
        down = [(t, -s) for t, s in pk if s < 0]
        if down:
            yield pk[0][0], down


def finish(t0, down, rate):
    """Time the last data cell leaves a sender of rate cells/s."""
    per = 1e6 / rate
    t, queued, last = t0, 0, t0
    for at, size in down:
        while queued > 0 and t <= at:
            queued -= min(queued, BODY)
            last, t = t, t + per
        if queued == 0:
            t = max(t, at)
        queued += size
    while queued > 0:
        queued -= min(queued, BODY)
        last, t = t, t + per
    return last


def main(path, rates):
    traces = list(loads(path))
    for rate in rates:
        sent = data = 0
        stretch = []
        for t0, down in traces:
            end = finish(t0, down, rate)
            sent += rate * (end - t0) / 1e6 * CELL
            data += sum(s for _, s in down)
            stretch.append((end - t0) / max(1, down[-1][0] - t0))
        print("rate %5d cells/s: dummies %4.0f %% of the download, median duration %.2f×"
              % (rate, 100 * (sent / data - 1), statistics.median(stretch)))


if __name__ == "__main__":
    main(sys.argv[1], [float(r) for r in sys.argv[2:]] or [1000, 1500, 2000, 3000])
