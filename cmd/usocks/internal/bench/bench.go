// Package bench is `usocks bench`: it runs one workload against direct
// TCP, shadowsocks-libev and usocks (v2 and v1) on loopback and prints one
// table.
//
// The machine is split into two one-core hosts: the bench process (the
// load generator) and each tunnel's client run on CPU 0; the tunnel's
// server and the target run on CPU 1. The target is `usocks bench target`,
// a separate process (echo, sink and source on one port); the tunnels are
// real processes (`usocks client`/`usocks server` of the same binary,
// ss-tunnel/ss-server from PATH) started on free loopback ports and stopped
// by PID. All tunnels are up at once and each workload runs through each
// tunnel in turn, run after run, so that other load on the machine falls
// on all of them alike. Every workload has a deadline, and the whole run a
// budget.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"usocks/wire"
)

// Scale sizes the workloads.
type Scale struct {
	Runs            int           `json:"runs"`             // runs of each timed workload (median, range)
	Bulk            time.Duration `json:"bulk_ns"`          // one bulk transfer, each way
	RoundTrips      int           `json:"round_trips"`      // round trips per run
	MsgSize         int           `json:"msg_size"`         // bytes per round trip message
	Connect         time.Duration `json:"connect_ns"`       // one run of the new-streams workload
	ConnConcurrency int           `json:"conn_concurrency"` // workers opening streams
	ManyStreams     int           `json:"many_streams"`     // concurrent echo streams
	ManyBytes       int           `json:"many_bytes"`       // bytes echoed per stream
	IdleStreams     int           `json:"idle_streams"`     // open idle streams for the RSS figure
	// Settle is how long after the idle streams held after the load
	// close the bench reads RSS again (memory handed back after a burst).
	Settle time.Duration `json:"settle_ns"`
	// TTFBSamples is how many connections each time-to-first-byte path
	// times (0: none).
	TTFBSamples int `json:"ttfb_samples"`
}

// DefaultScale is the full bench (about 35 s per tunnel).
func DefaultScale() Scale {
	return Scale{Runs: 3, Bulk: 3 * time.Second, RoundTrips: 20000, MsgSize: 64,
		Connect: 2 * time.Second, ConnConcurrency: 16, ManyStreams: 200, ManyBytes: 1 << 20, IdleStreams: 1000,
		Settle: time.Minute, TTFBSamples: 20}
}

// QuickScale is a few seconds per tunnel.
func QuickScale() Scale {
	return Scale{Runs: 3, Bulk: 500 * time.Millisecond, RoundTrips: 2000, MsgSize: 64,
		Connect: 500 * time.Millisecond, ConnConcurrency: 16, ManyStreams: 50, ManyBytes: 256 << 10, IdleStreams: 200,
		Settle: 5 * time.Second, TTFBSamples: 5}
}

func (s Scale) validate() error {
	switch {
	case s.Runs < 1 || s.Runs > 20:
		return errors.New("runs must be 1..20")
	case s.Bulk <= 0 || s.Bulk > 30*time.Second:
		return errors.New("bulk time must be in (0, 30s]")
	case s.RoundTrips < 1 || s.RoundTrips > 1_000_000:
		return errors.New("round trips must be 1..1e6")
	case s.MsgSize < 1 || s.MsgSize > 1<<20:
		return errors.New("message size must be 1..1 MiB")
	case s.Connect <= 0 || s.Connect > 30*time.Second:
		return errors.New("connect time must be in (0, 30s]")
	case s.ConnConcurrency < 1 || s.ConnConcurrency > 256:
		return errors.New("connect concurrency must be 1..256")
	case s.ManyStreams < 1 || s.ManyStreams > 2000:
		return errors.New("concurrent streams must be 1..2000")
	case s.ManyBytes < 1 || int64(s.ManyBytes)*int64(s.ManyStreams) > 2<<30:
		return errors.New("concurrent streams × bytes must be 1..2 GiB")
	case s.IdleStreams < 1 || s.IdleStreams > 10000:
		return errors.New("idle streams must be 1..10000")
	case s.Settle < 0 || s.Settle > 5*time.Minute:
		return errors.New("settle time must be in [0, 5m]")
	case s.TTFBSamples < 0 || s.TTFBSamples > 200:
		return errors.New("time-to-first-byte samples must be 0..200")
	}
	return nil
}

// DefaultBudget bounds a whole run unless Options.Budget says otherwise.
const DefaultBudget = 9 * time.Minute

// Options configure Run.
type Options struct {
	Tunnels []string // keys from AllTunnels, in any order
	Scale   Scale
	// Exe is the usocks binary run as `bench target`, `client` and
	// `server` (default: this executable).
	Exe string
	// Pin splits the machine into two one-core hosts (CPU 0: bench and
	// tunnel clients; CPU 1: tunnel servers and target). Without it, or
	// with fewer than two CPUs or no taskset, nothing is pinned.
	Pin bool
	// Budget bounds the whole run (default DefaultBudget).
	Budget time.Duration
	// Log gets progress lines (may be nil).
	Log io.Writer
}

type bencher struct {
	opts     Options
	exe      string
	taskset  string // path of taskset, "" when not pinning
	dir      string
	payloads *Payloads
	log      io.Writer
	logMu    sync.Mutex // the settle goroutines log too
	cpus     int        // CPUs this process could use before pinning
}

// Run runs the bench and returns its report.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.Scale.validate(); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if len(opts.Tunnels) == 0 {
		opts.Tunnels = AllTunnels
	}
	keys, err := ParseTunnels(strings.Join(opts.Tunnels, ","))
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	opts.Tunnels = keys // table order
	if opts.Budget <= 0 {
		opts.Budget = DefaultBudget
	}
	b := &bencher{opts: opts, exe: opts.Exe, log: opts.Log, cpus: cpusAllowed()}
	if b.log == nil {
		b.log = io.Discard
	}
	if b.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		b.exe = exe
	}
	started := time.Now()
	rep := &Report{Started: started, Scale: opts.Scale, CPUs: b.cpus, GoVersion: runtime.Version(),
		Columns: Columns(opts.Scale)}
	rep.LoadAvg[0] = loadAvg()
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		rep.Kernel = unix.ByteSliceToString(uts.Release[:])
	}

	// 1,000 idle streams take a socket each in the bench, the tunnel
	// client, the server and the target (two in ss-server).
	want := uint64(3*max(opts.Scale.IdleStreams, opts.Scale.ManyStreams) + 1024)
	nofile, err := raiseNofile(want)
	rep.NoFile = nofile
	if err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("could not raise the open-files limit: %v", err))
	} else if nofile < want {
		rep.Notes = append(rep.Notes, fmt.Sprintf("open-files limit %d is below the %d the bench wants", nofile, want))
	}

	if opts.Pin {
		if reason := b.pin(); reason != "" {
			rep.Notes = append(rep.Notes, "not pinned: "+reason)
		} else {
			restore, err := pinSelf(0)
			if err != nil {
				b.taskset = ""
				rep.Notes = append(rep.Notes, fmt.Sprintf("not pinned: %v", err))
			} else {
				defer restore()
				rep.Pinned = true
			}
		}
	}

	ctx, cancel := context.WithTimeout(ctx, opts.Budget)
	defer cancel()
	if b.dir, err = os.MkdirTemp("", "usocks-bench-"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(b.dir)

	b.logf("bench: making %d payloads of %d bytes", opts.Scale.ManyStreams, opts.Scale.ManyBytes)
	b.payloads = NewPayloads(opts.Scale.ManyStreams, opts.Scale.ManyBytes)

	cpu0 := sampleCPU()
	rep.Tunnels = b.runAll(ctx)
	if opts.Scale.TTFBSamples > 0 && (slices.Contains(opts.Tunnels, V2) || slices.Contains(opts.Tunnels, V2Off)) && ctx.Err() == nil {
		rep.TTFB = b.ttfb(ctx)
	}
	if d, ok := othersSince(cpu0); ok {
		rep.OtherCPU = d.Seconds()
	}
	rep.Seconds = time.Since(started).Seconds()
	rep.LoadAvg[1] = loadAvg()
	if share := rep.OtherCPU / (rep.Seconds * float64(max(1, b.cpus))); share > 0.05 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("other processes used %.0f CPU-s (%.0f%% of the machine) during the run: the figures may be skewed (the tunnels are interleaved, so the ratios less so)",
			rep.OtherCPU, 100*share))
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return rep, err
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the time budget (%v) ran out", opts.Budget))
	}
	return rep, nil
}

// pin decides whether to pin; it returns why not, or "".
func (b *bencher) pin() string {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return err.Error()
	}
	if !set.IsSet(0) || !set.IsSet(1) {
		return "CPUs 0 and 1 are not both available"
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return "taskset not found"
	}
	b.taskset = ts
	return ""
}

func (b *bencher) logf(format string, a ...any) {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	fmt.Fprintf(b.log, format+"\n", a...)
}

// live is a tunnel that is up, and its measurements so far.
type live struct {
	res  *TunnelResult
	s    *setup
	vals map[string][]float64
	down bool // a process of it exited: skip it
}

func (l *live) add(key string, v float64) { l.vals[key] = append(l.vals[key], v) }

// alive checks the tunnel's processes before a workload.
func (l *live) alive() bool {
	if l.down {
		return false
	}
	for _, p := range []*proc{l.s.client, l.s.server, l.s.target} {
		if p != nil && p.exited() {
			l.res.Notes = append(l.res.Notes, fmt.Sprintf("%s exited during the bench: %s; later workloads skipped", p.name, p.reason()))
			l.down = true
			return false
		}
	}
	return true
}

// runAll starts every tunnel, then runs each workload through each tunnel
// in turn, run after run (the first tunnel rotating), so that any other
// load on the machine falls on all of them alike; then it stops them.
func (b *bencher) runAll(ctx context.Context) []*TunnelResult {
	var results []*TunnelResult
	var tunnels []*live
	defer func() {
		for _, l := range tunnels {
			l.s.stop()
		}
	}()
	for _, key := range b.opts.Tunnels {
		res := &TunnelResult{Key: key, Name: tunnelName(key), Metrics: map[string]*Metric{}, Errors: map[string]string{}}
		results = append(results, res)
		if ctx.Err() != nil {
			res.Unavailable = "time budget exhausted"
			continue
		}
		switch key {
		case SS:
			res.Detail = ssVersion() + ", " + SSMethod + ", --no-delay"
		case SB, SBMux:
			res.Detail = singBoxVersion() + ", " + SBMethod
			if key == SBMux {
				res.Detail += ", smux (one connection)"
			}
		case V2Off:
			res.Detail = "cipher " + wire.DefaultCipher().String() + " (auto), defense: off"
		case V2OffNoResume:
			res.Detail = "cipher " + wire.DefaultCipher().String() + " (auto), defense: off, resume_timeout: -1s (no resend stage)"
		case V2:
			res.Detail = "cipher " + wire.DefaultCipher().String() + " (auto), defense: standard (the default)"
		case V1:
			res.Detail = "protocol: v1"
		}
		b.logf("bench: %s: starting", res.Name)
		s, err := b.startTunnel(ctx, key)
		if err != nil {
			var un *errUnavailable
			if errors.As(err, &un) {
				res.Unavailable = un.reason
			} else {
				res.Unavailable = "start failed: " + err.Error()
			}
			b.logf("bench: %s: n/a (%s)", res.Name, res.Unavailable)
			continue
		}
		tunnels = append(tunnels, &live{res: res, s: s, vals: map[string][]float64{}})
	}

	// Resident memory with every tunnel up and one stream done.
	time.Sleep(200 * time.Millisecond)
	for _, l := range tunnels {
		b.rss(l.res, l.s, "rss_idle")
	}
	// Idle streams next, on fresh processes: the figure is then what
	// holding the streams costs, not what the bulk workloads below leave in
	// a garbage-collected heap (Go returns freed memory to the OS lazily;
	// a C tunnel's free() returns it at once).
	for _, l := range tunnels {
		if ctx.Err() != nil || !l.alive() {
			continue
		}
		b.idle(ctx, l)
	}
	sc := b.opts.Scale
	for run := range sc.Runs {
		n := len(tunnels)
		order := make([]*live, 0, n)
		for i := range n {
			order = append(order, tunnels[(run+i)%n])
		}
		for _, w := range []func(context.Context, *live, int){b.bulk, b.roundTrips, b.connects, b.many} {
			for _, l := range order {
				if ctx.Err() != nil || !l.alive() {
					continue
				}
				w(ctx, l, run)
			}
		}
	}
	// Idle streams again, now that the bulk workloads have grown every
	// heap, then RSS once they have been closed for Settle.
	var settled sync.WaitGroup
	for _, l := range tunnels {
		if ctx.Err() != nil || !l.alive() {
			continue
		}
		b.idleAfterLoad(ctx, l, &settled)
	}
	settled.Wait()
	for _, l := range tunnels {
		l.alive() // notes a process that exited
		for k, v := range l.vals {
			if k != "lost" && k != "bad" {
				l.res.set(k, v...)
			}
		}
		if len(l.vals["lost"]) > 0 { // totals over every run
			l.res.set("many_lost_bytes", sum(l.vals["lost"]))
			l.res.set("many_bad_streams", sum(l.vals["bad"]))
		}
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			l.res.Notes = append(l.res.Notes, "the time budget ran out: later workloads were skipped")
		case ctx.Err() != nil:
			l.res.Notes = append(l.res.Notes, "interrupted")
		}
	}
	return results
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t
}

func last(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	return fmtNum(v[len(v)-1])
}

func metricStr(m *Metric) string {
	if m == nil {
		return "-"
	}
	return fmtNum(m.Median)
}

// ssVersion is shadowsocks-libev's version line, as ss-server -h prints it.
func ssVersion() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ss-server", "-h").CombinedOutput()
	for line := range strings.Lines(string(out)) {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "shadowsocks-libev") {
			return line
		}
	}
	return "shadowsocks-libev"
}
