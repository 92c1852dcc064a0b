package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"usocks/cmd/usocks/internal/wfbench"
)

const wfbenchHelp = `usage: usocks wfbench [flags]

The website-fingerprinting bench: loads synthetic pages through a loopback
tunnel per policy and link, records what an observer on the link sees
(segments of a 1500-MTU TCP link), and reports how well a random forest
and k-NN tell the pages apart, with bandwidth overhead and page-load time.
Writes features.csv, report.json and report.md into -out. The random
forest needs python3 with sklearn; without it only the built-in k-NN runs.

policies: built in (off, light, standard, max set the defense key on both
sides; default sets nothing; direct is no tunnel) or
NAME=key:value;key:value with config keys for both sides, dotted for
nested ones (defense_tuning.front:40), prefixed with client. or server.
for one side.
links: unshaped or RATEmbit, each optionally +DELAY (e.g. 50mbit+10ms).
`

// runWFBench is the `usocks wfbench` subcommand (see internal/wfbench).
func runWFBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wfbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pages := fs.Int("pages", 20, "distinct pages (classes)")
	loads := fs.Int("loads", 20, "loads of each page")
	policies := fs.String("policies", wfbench.DefaultPolicies(), "comma-separated policies")
	links := fs.String("links", "unshaped,50mbit", "comma-separated links")
	parallel := fs.Int("parallel", 8, "(policy, link) runs at once, each with its own tunnel")
	out := fs.String("out", "wfbench-out", "output directory")
	gap := fs.Duration("gap", 2*time.Second, "idle time from a page's last byte to the next load")
	tail := fs.Duration("tail", time.Second, "how long a trace runs after the page's last byte")
	seed := fs.Uint64("seed", 1, "seed of the page set and the load jitter")
	from := fs.String("from", "", "no loading: report again on the run saved in this directory (needs -traces)")
	traces := fs.Bool("traces", false, "also write each run's raw traces (POLICY-LINK.traces)")
	noPython := fs.Bool("no-python", false, "skip the sklearn classifiers")
	jsonOut := fs.Bool("json", false, "print the report as JSON instead of Markdown")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	bound := fs.Bool("bound", false, "no tunnel: print how well an observer of the download volume alone names the page, per padding bucket, from the page model (-loads of each page; -loads 400 for a well-trained observer)")
	if err := parseFlags(fs, wfbenchHelp, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *pages < 2 || *loads < 2 {
		return fmt.Errorf("wfbench: need at least 2 pages and 2 loads")
	}
	if *bound {
		wfbench.WriteBound(stdout, *seed, *pages, *loads, wfbench.VolumeBound(*seed, *pages, *loads, wfbench.DefaultBoundBuckets))
		return nil
	}
	if *from != "" {
		var progress io.Writer = stderr
		if *quiet {
			progress = nil
		}
		rep, err := wfbench.Rereport(*from, *noPython, progress)
		if err != nil {
			return err
		}
		return printReport(stdout, rep, *jsonOut)
	}
	ps, err := wfbench.ParsePolicies(*policies)
	if err != nil {
		return fmt.Errorf("wfbench: -policies: %w", err)
	}
	ls, err := wfbench.ParseLinks(*links)
	if err != nil {
		return fmt.Errorf("wfbench: -links: %w", err)
	}
	o := wfbench.Options{Pages: *pages, Loads: *loads, Seed: *seed, Gap: *gap, Tail: *tail,
		Policies: ps, Links: ls, Parallel: *parallel, Out: *out, Progress: stderr, NoPython: *noPython, Traces: *traces}
	if *quiet {
		o.Progress = nil
	}
	rep, err := wfbench.Bench(ctx, o)
	if err != nil {
		return err
	}
	return printReport(stdout, rep, *jsonOut)
}

func printReport(w io.Writer, rep *wfbench.Report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	rep.WriteMarkdown(w)
	return nil
}
