package wfbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ParseLinks reads a comma-separated list of links: "unshaped", or a rate
// such as "50mbit", each optionally with a one-way delay ("50mbit+10ms",
// "unshaped+5ms").
func ParseLinks(s string) ([]Link, error) {
	var out []Link
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		l := Link{Name: item}
		rate, delay, hasDelay := strings.Cut(item, "+")
		if hasDelay {
			d, err := time.ParseDuration(delay)
			if err != nil || d < 0 || d > 10*time.Second {
				return nil, fmt.Errorf("link %q: bad delay %q", item, delay)
			}
			l.Delay = d
		}
		if rate != "unshaped" {
			num, ok := strings.CutSuffix(strings.ToLower(rate), "mbit")
			v, err := strconv.ParseFloat(num, 64)
			if !ok || err != nil || v <= 0 || v > 100_000 {
				return nil, fmt.Errorf("link %q: want unshaped or a rate such as 50mbit, optionally +DELAY", item)
			}
			l.RateMbit = v
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, errors.New("no link")
	}
	return out, nil
}

// Options is a whole bench: every policy on every link.
type Options struct {
	Pages, Loads int
	Seed         uint64
	Gap, Tail    time.Duration
	Policies     []Policy
	Links        []Link
	Parallel     int    // runs at once (each its own tunnel and recorder)
	Out          string // directory for features.csv, report.*, logs
	Progress     io.Writer
	// NoPython skips the sklearn classifiers.
	NoPython bool
	// Traces also writes each run's raw traces (POLICY-LINK.traces).
	Traces bool
}

// BasePolicy is the reference for overhead and page-load time: "off"
// if run, else the first policy.
func BasePolicy(ps []Policy) string {
	for _, p := range ps {
		if p.Name == "off" {
			return p.Name
		}
	}
	return ps[0].Name
}

// Bench runs every (policy, link), writes features.csv and the report
// into o.Out, and returns the report.
func Bench(ctx context.Context, o Options) (*Report, error) {
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	type job struct {
		p Policy
		l Link
	}
	var jobs []job
	for _, l := range o.Links {
		for _, p := range o.Policies {
			jobs = append(jobs, job{p, l})
		}
	}
	runs := make([]*RunResult, len(jobs))
	errs := make([]error, len(jobs))
	sem := make(chan struct{}, max(1, o.Parallel))
	var wg sync.WaitGroup
	var mu sync.Mutex
	logf := func(format string, a ...any) {
		if o.Progress != nil {
			mu.Lock()
			fmt.Fprintf(o.Progress, format, a...)
			mu.Unlock()
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			name := j.p.Name + "-" + j.l.Name
			lf, err := os.Create(filepath.Join(o.Out, name+".log"))
			if err != nil {
				errs[i] = err
				return
			}
			defer lf.Close()
			logf("wfbench: %s started\n", name)
			runs[i], errs[i] = Run(ctx, RunOptions{
				Pages: o.Pages, Loads: o.Loads, Seed: o.Seed, Gap: o.Gap, Tail: o.Tail,
				Policy: j.p, Link: j.l, Log: lf,
				Progress: func(done, total int) {
					if done%max(1, total/10) == 0 {
						logf("wfbench: %s %d/%d loads\n", name, done, total)
					}
				},
			})
			if errs[i] != nil {
				logf("wfbench: %s failed: %v\n", name, errs[i])
				cancel()
			} else {
				logf("wfbench: %s done in %v\n", name, runs[i].Elapsed.Round(time.Second))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if o.Traces {
		for _, r := range runs {
			if err := writeFile(filepath.Join(o.Out, r.Policy+"-"+r.Link+".traces"), func(w io.Writer) error { return WriteTraces(w, r) }); err != nil {
				return nil, err
			}
		}
	}
	return report(runs, o.Out, BasePolicy(o.Policies), o.Pages, o.NoPython, logf)
}

// report writes features.csv, runs the sklearn attacks (unless noPython)
// and writes the report into dir.
func report(runs []*RunResult, dir, base string, pages int, noPython bool, logf func(string, ...any)) (*Report, error) {
	csvPath := filepath.Join(dir, "features.csv")
	if err := writeFile(csvPath, func(w io.Writer) error { return WriteCSV(w, runs) }); err != nil {
		return nil, err
	}
	var (
		acc map[string]struct{ RF, KNN float64 }
		err error
	)
	if !noPython {
		logf("wfbench: classifying (sklearn)\n")
		if acc, err = Classify(csvPath); err != nil {
			logf("wfbench: no random forest: %v\n", err)
		}
	}
	rep := BuildReport(runs, acc, base, pages)
	return rep, rep.WriteFiles(dir)
}

// Rereport rebuilds the report of an earlier run from its directory
// (report.json and the POLICY-LINK.traces that -traces wrote), with this
// build's features and attacks, and rewrites features.csv and the report.
func Rereport(dir string, noPython bool, progress io.Writer) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return nil, err
	}
	var old Report
	if err := json.Unmarshal(b, &old); err != nil {
		return nil, fmt.Errorf("%s/report.json: %w", dir, err)
	}
	var runs []*RunResult
	for _, row := range old.Rows {
		f, err := os.Open(filepath.Join(dir, row.Policy+"-"+row.Link+".traces"))
		if err != nil {
			return nil, fmt.Errorf("%w (the run needs -traces)", err)
		}
		samples, err := ReadTraces(f)
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s-%s.traces: %w", row.Policy, row.Link, err)
		}
		elapsed, _ := time.ParseDuration(row.Elapsed)
		runs = append(runs, &RunResult{Policy: row.Policy, Link: row.Link, Samples: samples,
			AppBytes: row.AppBytes, WireBytes: row.WireBytes, Sessions: row.Sessions, Elapsed: elapsed})
	}
	logf := func(format string, a ...any) {
		if progress != nil {
			fmt.Fprintf(progress, format, a...)
		}
	}
	return report(runs, dir, old.Base, old.rowsPages(), noPython, logf)
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
