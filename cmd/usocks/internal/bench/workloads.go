package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// The workloads of a run, each through one tunnel; bench.go runs them in
// turn.

// bulk is workload 1: one stream up, then one down.
func (b *bencher) bulk(ctx context.Context, l *live, run int) {
	sc := b.opts.Scale
	if v, err := BulkUp(ctx, l.s.addr, sc.Bulk); err != nil {
		l.res.fail("up_gbps", err)
	} else {
		l.add("up_gbps", v)
	}
	if v, err := BulkDown(ctx, l.s.addr, sc.Bulk); err != nil {
		l.res.fail("down_gbps", err)
	} else {
		l.add("down_gbps", v)
	}
	b.logf("bench: %s: bulk run %d/%d: up %s down %s Gbit/s", l.res.Name, run+1, sc.Runs, last(l.vals["up_gbps"]), last(l.vals["down_gbps"]))
}

// RoundTripLimit bounds one run of the round-trip workload: a paced
// tunnel (the default defence policy) is measured on the round trips it
// gets through by then.
const RoundTripLimit = 20 * time.Second

// roundTrips is workload 2: request/response on one stream.
func (b *bencher) roundTrips(ctx context.Context, l *live, run int) {
	sc := b.opts.Scale
	cpu := l.cpuStart()
	lat, err := RoundTrips(ctx, l.s.addr, sc.RoundTrips, sc.MsgSize, RoundTripLimit)
	if err != nil {
		l.res.fail("rr_p50_us", err)
		l.res.fail("rr_p99_us", err)
		return
	}
	if len(lat) < sc.RoundTrips {
		l.res.Notes = append(l.res.Notes, fmt.Sprintf("round trips run %d: %d of %d in %v (paced); the figures are theirs", run+1, len(lat), sc.RoundTrips, RoundTripLimit))
	}
	l.add("rr_p50_us", Micros(Percentile(lat, 50)))
	l.add("rr_p99_us", Micros(Percentile(lat, 99)))
	cpu.per("rr_cpu", len(lat))
	b.logf("bench: %s: round trips run %d/%d: p50 %s µs p99 %s µs", l.res.Name, run+1, sc.Runs, last(l.vals["rr_p50_us"]), last(l.vals["rr_p99_us"]))
}

// connects is workload 3: new streams per second.
func (b *bencher) connects(ctx context.Context, l *live, run int) {
	sc := b.opts.Scale
	cpu := l.cpuStart()
	r := Connects(ctx, l.s.addr, sc.ConnConcurrency, sc.Connect)
	if r.Failed > 0 {
		l.res.fail("conn_per_s", fmt.Errorf("%d of %d streams failed, first: %w", r.Failed, r.Failed+r.Done, r.FirstEr))
	}
	if r.Done == 0 {
		return
	}
	l.add("conn_per_s", float64(r.Done)/r.Elapsed.Seconds())
	cpu.per("conn_cpu", r.Done+r.Failed)
	l.add("conn_p99_ms", Millis(Percentile(r.Latency, 99)))
	b.logf("bench: %s: new streams run %d/%d: %s/s, p99 %s ms", l.res.Name, run+1, sc.Runs, last(l.vals["conn_per_s"]), last(l.vals["conn_p99_ms"]))
}

// many is workload 4: concurrent checked streams, with the CPU time each
// side of the tunnel used for them.
func (b *bencher) many(ctx context.Context, l *live, run int) {
	sc := b.opts.Scale
	c0, s0 := cpuOf(l.s.client), cpuOf(l.s.server)
	r := Many(ctx, l.s.addr, b.payloads, 2*time.Minute)
	c1, s1 := cpuOf(l.s.client), cpuOf(l.s.server)
	l.add("lost", float64(r.Lost))
	l.add("bad", float64(r.Bad))
	if r.Bad > 0 {
		l.res.fail("many_s", fmt.Errorf("%d of %d streams bad, %d bytes lost, first: %w", r.Bad, len(b.payloads.Data), r.Lost, r.FirstEr))
		return
	}
	l.add("many_s", r.Elapsed.Seconds())
	if c0 >= 0 && c1 >= 0 {
		l.add("cpu_client_s", (c1 - c0).Seconds())
	}
	if s0 >= 0 && s1 >= 0 {
		l.add("cpu_server_s", (s1 - s0).Seconds())
	}
	b.logf("bench: %s: %d streams run %d/%d: %s s, %.1f Gbit/s each way", l.res.Name, sc.ManyStreams, run+1, sc.Runs,
		last(l.vals["many_s"]), Gbps(r.Sent, r.Elapsed))
}

// idle is workload 5: resident memory while holding idle streams.
func (b *bencher) idle(ctx context.Context, l *live) {
	sc := b.opts.Scale
	conns, err := HoldIdle(ctx, l.s.addr, sc.IdleStreams, 32)
	if err != nil {
		l.res.fail("rss_streams_client_mib", err)
		l.res.fail("rss_streams_server_mib", err)
		return
	}
	defer closeAll(conns)
	time.Sleep(500 * time.Millisecond)
	b.rss(l.res, l.s, "rss_streams")
	b.logf("bench: %s: RSS with %d idle streams: client %s server %s MiB", l.res.Name, sc.IdleStreams,
		metricStr(l.res.Metrics["rss_streams_client_mib"]), metricStr(l.res.Metrics["rss_streams_server_mib"]))
}

// idleAfterLoad is workload 6: resident memory while holding idle streams
// after the other workloads, and Settle after those streams closed (read
// by a goroutine that wg tracks, so that the tunnels settle in parallel).
func (b *bencher) idleAfterLoad(ctx context.Context, l *live, wg *sync.WaitGroup) {
	sc := b.opts.Scale
	conns, err := HoldIdle(ctx, l.s.addr, sc.IdleStreams, 32)
	if err != nil {
		l.res.fail("rss_load_client_mib", err)
		l.res.fail("rss_load_server_mib", err)
		return
	}
	time.Sleep(500 * time.Millisecond)
	b.rss(l.res, l.s, "rss_load")
	closeAll(conns)
	b.logf("bench: %s: RSS with %d idle streams after load: client %s server %s MiB", l.res.Name, sc.IdleStreams,
		metricStr(l.res.Metrics["rss_load_client_mib"]), metricStr(l.res.Metrics["rss_load_server_mib"]))
	wg.Go(func() {
		select {
		case <-time.After(sc.Settle):
		case <-ctx.Done():
			return
		}
		b.rss(l.res, l.s, "rss_settled")
		b.logf("bench: %s: RSS %v after the streams closed: client %s server %s MiB", l.res.Name, sc.Settle,
			metricStr(l.res.Metrics["rss_settled_client_mib"]), metricStr(l.res.Metrics["rss_settled_server_mib"]))
	})
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
// cpuMark is the CPU time each side of a tunnel had used when a
// workload started.
type cpuMark struct {
	l              *live
	client, server time.Duration
}

func (l *live) cpuStart() cpuMark {
	return cpuMark{l, cpuOf(l.s.client), cpuOf(l.s.server)}
}

// per records the CPU time each side used since m, in µs per operation
// (key_client_us, key_server_us): what one stream or one round trip
// costs the tunnel, a figure the load of other processes on the same
// CPUs disturbs far less than a rate.
func (m cpuMark) per(key string, ops int) {
	if ops <= 0 {
		return
	}
	for _, side := range []struct {
		name string
		p    *proc
		t0   time.Duration
	}{{"client", m.l.s.client, m.client}, {"server", m.l.s.server, m.server}} {
		if t1 := cpuOf(side.p); side.t0 >= 0 && t1 >= 0 {
			m.l.add(key+"_"+side.name+"_us", Micros(t1-side.t0)/float64(ops))
		}
	}
}

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
