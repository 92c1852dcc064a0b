#!/usr/bin/env python3
"""Where a defence policy's overhead goes, from a bench run's directory.

Each side's defence stage logs its totals when the session ends (data
and dummy bytes, dummy cells by cause); the bench writes those logs as
OUT/POLICY-LINK.log beside OUT/report.json. For every row of the report
this prints the overhead over the application bytes split into: dummies
down (server) and up (client), each in the pauses inside episodes (gap),
in the idle after an episode's last data (idle), filling its bucket
(tail) and any other (FRONT, tie, between episodes); the cell padding
and record headers of the data (cells); and TCP/IP headers with
whatever else the link carried (headers). All in % of the application
bytes; they add up to the report's overhead.

    python3 breakdown.py OUT
"""
import json
import os
import re
import sys

CELL = 1448
CAUSES = ("gap", "idle", "tail", "other")


def totals(log):
    """The last totals line of each side in a run's log."""
    out = {}
    for line in open(log):
        if "defence totals" not in line:
            continue
        f = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
        out[f["side"]] = f
    return out


def main(d):
    rep = json.load(open(os.path.join(d, "report.json")))
    for row in rep["rows"]:
        name, app, wire = row["policy"], row["app_bytes"], row["wire_bytes"]
        log = os.path.join(d, "%s-%s.log" % (name, row["link"]))
        tot = totals(log) if os.path.exists(log) else {}
        pct = lambda x: "%6.1f" % (100 * x / app)
        if set(tot) != {"server", "client"}:
            print("%-12s %-9s total %s (no defence totals)" % (name, row["link"], pct(wire - app)))
            continue
        data = sum(int(t["data_bytes"]) for t in tot.values())
        dummy = sum(int(t["dummy_bytes"]) for t in tot.values())
        parts = []
        for side, label in (("server", "down"), ("client", "up")):
            t = tot[side]
            parts.append(label + ": " + " ".join(
                "%s %s" % (c, pct(int(t["dummy_cells_" + c]) * CELL)) for c in CAUSES))
        print("%-12s %-9s total %s | %s | cells %s headers %s" % (
            name, row["link"], pct(wire - app), " | ".join(parts), pct(data - app), pct(wire - data - dummy)))


if __name__ == "__main__":
    main(sys.argv[1])
