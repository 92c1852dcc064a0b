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
// by PID. Every workload has a deadline.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
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
}

// DefaultScale is the full bench (about 40 s per tunnel).
func DefaultScale() Scale {
	return Scale{Runs: 3, Bulk: 3 * time.Second, RoundTrips: 20000, MsgSize: 64,
		Connect: 2 * time.Second, ConnConcurrency: 16, ManyStreams: 200, ManyBytes: 1 << 20, IdleStreams: 1000}
}

// QuickScale is a few seconds per tunnel.
func QuickScale() Scale {
	return Scale{Runs: 3, Bulk: 500 * time.Millisecond, RoundTrips: 2000, MsgSize: 64,
		Connect: 500 * time.Millisecond, ConnConcurrency: 16, ManyStreams: 50, ManyBytes: 256 << 10, IdleStreams: 200}
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
	}
	return nil
}

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
	// Budget bounds the whole run (default 4m30s).
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
	cpus     int // CPUs this process could use before pinning
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
		opts.Budget = 4*time.Minute + 30*time.Second
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

	for i, key := range opts.Tunnels {
		// Each tunnel gets an equal share of what is left, so that one that
		// hangs cannot take the time of the others.
		tctx, tcancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			tctx, tcancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(len(opts.Tunnels)-i))
		}
		rep.Tunnels = append(rep.Tunnels, b.runTunnel(tctx, key))
		tcancel()
	}
	rep.Seconds = time.Since(started).Seconds()
	rep.LoadAvg[1] = loadAvg()
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
	fmt.Fprintf(b.log, format+"\n", a...)
}

// runTunnel starts one tunnel, runs every workload through it and stops it.
func (b *bencher) runTunnel(ctx context.Context, key string) *TunnelResult {
	res := &TunnelResult{Key: key, Name: tunnelName(key), Metrics: map[string]*Metric{}, Errors: map[string]string{}}
	if ctx.Err() != nil {
		res.Unavailable = "time budget exhausted"
		return res
	}
	switch key {
	case SS:
		res.Detail = ssVersion() + ", " + SSMethod + ", --no-delay"
	case V2:
		res.Detail = "cipher " + wire.DefaultCipher().String() + " (auto)"
	case V1:
		res.Detail = "protocol: v1"
	}
	b.logf("bench: %s: starting", res.Name)
	t0 := time.Now()
	cpu0 := sampleCPU()
	s, err := b.startTunnel(ctx, key)
	if err != nil {
		var un *errUnavailable
		if errors.As(err, &un) {
			res.Unavailable = un.reason
		} else {
			res.Unavailable = "start failed: " + err.Error()
		}
		b.logf("bench: %s: n/a (%s)", res.Name, res.Unavailable)
		return res
	}
	defer func() {
		for _, p := range []*proc{s.client, s.server, s.target} {
			if p != nil && p.exited() {
				res.Notes = append(res.Notes, fmt.Sprintf("%s exited during the bench: %s", p.name, p.reason()))
			}
		}
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			res.Notes = append(res.Notes, "its share of the time budget ran out; later workloads were skipped")
		case ctx.Err() != nil:
			res.Notes = append(res.Notes, "interrupted")
		}
		s.stop()
		res.Seconds = time.Since(t0).Seconds()
		if d, ok := othersSince(cpu0); ok {
			res.OtherCPU = d.Seconds()
			if share := d.Seconds() / (res.Seconds * float64(max(1, b.cpus))); share > 0.05 {
				res.Notes = append(res.Notes, fmt.Sprintf("other processes used %.1f CPU-s (%.0f%% of the machine) while it ran: its figures are skewed",
					d.Seconds(), 100*share))
			}
		}
	}()
	sc := b.opts.Scale

	// Resident memory with the tunnel up and one stream done.
	time.Sleep(200 * time.Millisecond)
	b.rss(res, s, "rss_idle")

	// 1. Bulk throughput, alternating up and down.
	var up, down []float64
	for run := range sc.Runs {
		if ctx.Err() != nil {
			break
		}
		if v, err := BulkUp(ctx, s.addr, sc.Bulk); err != nil {
			res.fail("up_gbps", err)
		} else {
			up = append(up, v)
		}
		if v, err := BulkDown(ctx, s.addr, sc.Bulk); err != nil {
			res.fail("down_gbps", err)
		} else {
			down = append(down, v)
		}
		b.logf("bench: %s: bulk run %d/%d: up %s down %s Gbit/s", res.Name, run+1, sc.Runs, last(up), last(down))
	}
	res.set("up_gbps", up...)
	res.set("down_gbps", down...)

	// 2. Request/response round trips on one connection.
	var p50, p99 []float64
	for run := range sc.Runs {
		if ctx.Err() != nil {
			break
		}
		lat, err := RoundTrips(ctx, s.addr, sc.RoundTrips, sc.MsgSize, time.Minute)
		if err != nil {
			res.fail("rr_p50_us", err)
			res.fail("rr_p99_us", err)
			continue
		}
		p50 = append(p50, Micros(Percentile(lat, 50)))
		p99 = append(p99, Micros(Percentile(lat, 99)))
		b.logf("bench: %s: round trips run %d/%d: p50 %s µs p99 %s µs", res.Name, run+1, sc.Runs, last(p50), last(p99))
	}
	res.set("rr_p50_us", p50...)
	res.set("rr_p99_us", p99...)

	// 3. New streams per second.
	var rate, cp99 []float64
	for run := range sc.Runs {
		if ctx.Err() != nil {
			break
		}
		r := Connects(ctx, s.addr, sc.ConnConcurrency, sc.Connect)
		if r.Failed > 0 {
			res.fail("conn_per_s", fmt.Errorf("%d of %d streams failed, first: %w", r.Failed, r.Failed+r.Done, r.FirstEr))
		}
		if r.Done == 0 {
			continue
		}
		rate = append(rate, float64(r.Done)/r.Elapsed.Seconds())
		cp99 = append(cp99, Millis(Percentile(r.Latency, 99)))
		b.logf("bench: %s: new streams run %d/%d: %s/s, p99 %s ms", res.Name, run+1, sc.Runs, last(rate), last(cp99))
	}
	res.set("conn_per_s", rate...)
	res.set("conn_p99_ms", cp99...)

	// 4. Concurrent checked streams, with the CPU time of each side.
	var secs, cpuC, cpuS []float64
	var lost int64
	bad := 0
	for run := range sc.Runs {
		if ctx.Err() != nil {
			break
		}
		c0, s0 := cpuOf(s.client), cpuOf(s.server)
		r := Many(ctx, s.addr, b.payloads, 2*time.Minute)
		c1, s1 := cpuOf(s.client), cpuOf(s.server)
		lost += r.Lost
		bad += r.Bad
		if r.Bad > 0 {
			res.fail("many_s", fmt.Errorf("%d of %d streams bad, %d bytes lost, first: %w", r.Bad, len(b.payloads.Data), r.Lost, r.FirstEr))
			continue
		}
		secs = append(secs, r.Elapsed.Seconds())
		if c0 >= 0 && c1 >= 0 {
			cpuC = append(cpuC, (c1 - c0).Seconds())
		}
		if s0 >= 0 && s1 >= 0 {
			cpuS = append(cpuS, (s1 - s0).Seconds())
		}
		b.logf("bench: %s: %d streams run %d/%d: %s s, %.1f Gbit/s each way", res.Name, sc.ManyStreams, run+1, sc.Runs,
			last(secs), Gbps(r.Sent, r.Elapsed))
	}
	res.set("many_s", secs...)
	res.set("cpu_client_s", cpuC...)
	res.set("cpu_server_s", cpuS...)
	if ctx.Err() == nil {
		res.set("many_lost_bytes", float64(lost))
		res.set("many_bad_streams", float64(bad))
	}

	// 5. Resident memory while holding idle streams.
	if ctx.Err() == nil {
		conns, err := HoldIdle(ctx, s.addr, sc.IdleStreams, 32)
		if err != nil {
			res.fail("rss_streams_client_mib", err)
			res.fail("rss_streams_server_mib", err)
		} else {
			time.Sleep(500 * time.Millisecond)
			b.rss(res, s, "rss_streams")
			closeAll(conns)
			b.logf("bench: %s: RSS with %d idle streams: client %s server %s MiB", res.Name, sc.IdleStreams,
				metricStr(res.Metrics["rss_streams_client_mib"]), metricStr(res.Metrics["rss_streams_server_mib"]))
		}
	}
	return res
}

// rss records the resident memory of the tunnel's client and server.
func (b *bencher) rss(res *TunnelResult, s *setup, prefix string) {
	for _, side := range []struct {
		p    *proc
		name string
	}{{s.client, "client"}, {s.server, "server"}} {
		if side.p == nil {
			continue
		}
		key := prefix + "_" + side.name + "_mib"
		if kib, err := rssKiB(side.p.pid()); err != nil {
			res.fail(key, err)
		} else {
			res.set(key, float64(kib)/1024)
		}
	}
}

// cpuOf is the CPU time a process has used so far; -1 for none.
func cpuOf(p *proc) time.Duration {
	if p == nil {
		return -1
	}
	d, err := cpuTime(p.pid())
	if err != nil {
		return -1
	}
	return d
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
