package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"usocks/cmd/usocks/internal/bench"
)

const benchUsage = `usage: usocks bench [flags]

Runs the same workloads on loopback against direct TCP, shadowsocks-libev
(ss-server + ss-tunnel, aes-256-gcm), sing-box (Shadowsocks 2022, with and
without smux), usocks v2 (defense off, and the default policy) and usocks
v1, and prints one table (medians, ratios to shadowsocks-libev, ranges).
About 7 minutes; --quick takes about a minute.

flags:
`

// runBench is the `usocks bench` subcommand (see internal/bench).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "target" {
		// Hidden: the bench's target server, started by the bench itself.
		return bench.RunTarget(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	tunnels := fs.String("tunnels", "all", "comma-separated: direct, ss, sb, sbmux, v2off, v2, v1 or all")
	quick := fs.Bool("quick", false, "small workloads (about 30 s in all)")
	runs := fs.Int("runs", 0, "runs of each workload (default 3)")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	markdown := fs.Bool("markdown", false, "print the tables as Markdown")
	noPin := fs.Bool("no-pin", false, "do not pin processes to CPUs 0 and 1")
	budget := fs.Duration("budget", bench.DefaultBudget, "bound on the whole run")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	keys, err := bench.ParseTunnels(*tunnels)
	if err != nil {
		return fmt.Errorf("bench: --tunnels: %w", err)
	}
	opts := bench.Options{Tunnels: keys, Scale: bench.DefaultScale(), Pin: !*noPin, Budget: *budget, Log: stderr}
	if *quick {
		opts.Scale = bench.QuickScale()
	}
	if *runs > 0 {
		opts.Scale.Runs = *runs
	}
	if *quiet {
		opts.Log = nil
	}
	rep, err := bench.Run(ctx, opts)
	if rep == nil {
		return err
	}
	// An interrupted run still prints what it measured.
	var werr error
	if *jsonOut {
		werr = rep.WriteJSON(stdout)
	} else {
		werr = rep.WriteTable(stdout, *markdown)
	}
	if err != nil {
		return err
	}
	return werr
}
