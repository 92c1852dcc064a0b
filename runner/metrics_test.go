package runner

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches and parses a Prometheus text exposition.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value is the sum of a family's samples whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	sum := 0.0
	for _, m := range f.Metric {
		match := true
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum, true
}

// TestMetrics: both sides serve Prometheus metrics that count what went
// through (streams and bytes each way, as the access log saw them),
// sessions, handshake failures by reason, and memory.
func TestMetrics(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), metrics: true})
	defer tn.stop()
	const streams, size = 3, 200 << 10
	echoMany(t, tn, streams, size)
	// A connection that is not a usocks client: one handshake failure.
	junk, err := net.Dial("tcp", tn.serverAddr())
	if err != nil {
		t.Fatal(err)
	}
	rejected := tn.srv.Rejected.Load() // the client may have retried a first flight
	_, _ = junk.Write(make([]byte, 200))
	waitFor(t, "the junk connection to be rejected", 10*time.Second, func() bool { return tn.srv.Rejected.Load() == rejected+1 })
	junk.Close()
	// Streams are counted when they end, on the demux goroutine.
	for _, side := range []struct {
		name, addr string
	}{{"client", tn.cli.MetricsAddr()}, {"server", tn.srv.MetricsAddr()}} {
		if side.addr == "" {
			t.Fatalf("%s: no metrics address", side.name)
		}
		var fams map[string]*dto.MetricFamily
		waitFor(t, side.name+" streams counted", 10*time.Second, func() bool {
			fams = scrape(t, side.addr)
			n, _ := value(fams, "usocks_streams_ended_total", map[string]string{"side": side.name})
			return n == streams
		})
		// EchoCheck sends a mode byte and size bytes and reads size back.
		for dir, want := range map[string]float64{"up": streams * (size + 1), "down": streams * size} {
			if v, ok := value(fams, "usocks_stream_bytes_total", map[string]string{"direction": dir, "side": side.name}); !ok || v != want {
				t.Errorf("%s bytes %s = %v, want %v", side.name, dir, v, want)
			}
		}
		if v, _ := value(fams, "usocks_streams_opened_total", nil); v != streams {
			t.Errorf("%s streams opened %v", side.name, v)
		}
		if v, ok := value(fams, "go_memstats_heap_alloc_bytes", nil); !ok || v <= 0 {
			t.Errorf("%s: no memory metrics", side.name)
		}
		if _, ok := fams["usocks_defence_dummy_total"]; !ok {
			t.Errorf("%s: defence overhead not exposed", side.name)
		}
		if side.name == "server" {
			if v, _ := value(fams, "usocks_sessions_total", nil); v != 1 {
				t.Errorf("server sessions %v", v)
			}
			if v, _ := value(fams, "usocks_handshake_failures_total", nil); v != float64(rejected+1) {
				t.Errorf("handshake failures %v: %v", v, fams["usocks_handshake_failures_total"])
			}
		} else if _, ok := fams["usocks_reconnects_total"]; !ok {
			t.Error("client: no reconnect counter")
		}
	}
	// One access-log line per stream on each side, with the byte counts.
	lines := 0
	for _, e := range tn.hook.AllEntries() {
		if e.Message == "stream ended" {
			lines++
			if e.Data["up"] != int64(size+1) || e.Data["down"] != int64(size) || e.Data["end"] != "closed" {
				t.Errorf("access log %v", e.Data)
			}
		}
	}
	if lines != 2*streams {
		t.Errorf("%d stream lines, want %d", lines, 2*streams)
	}
}

func TestMetricsAddressMustBeLoopback(t *testing.T) {
	cases := []struct {
		addr   string
		remote bool
		ok     bool
	}{
		{"127.0.0.1:9090", false, true},
		{"[::1]:9090", false, true},
		{"localhost:9090", false, true},
		{"0.0.0.0:9090", false, false},
		{":9090", false, false},
		{"192.0.2.1:9090", false, false},
		{"192.0.2.1:9090", true, true},
		{"127.0.0.1", false, false},
	}
	for _, tc := range cases {
		var p problems
		checkMetricsAddr(&p, tc.addr, tc.remote)
		if (p.err() == nil) != tc.ok || (!tc.ok && !strings.HasPrefix(p.err().Error(), "metrics:")) {
			t.Errorf("%q remote=%v: %v", tc.addr, tc.remote, p.err())
		}
	}
}

// TestMetricsResumption: resumptions by outcome on both sides, detached
// sessions, and the resend buffers' bytes (SPEC-v2.md §7b).
func TestMetricsResumption(t *testing.T) {
	tg := startTarget(t)
	fc := newFakeClock()
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, resume: 30 * time.Second,
		srvResume: 10 * time.Second, srvClock: fc, metrics: true})
	defer tn.stop()
	tn.waitSession()
	cli, srv := tn.cli.MetricsAddr(), tn.srv.MetricsAddr()
	metric := func(addr, name string, labels map[string]string) float64 {
		v, ok := value(scrape(t, addr), name, labels)
		if !ok {
			t.Fatalf("%s: no %s", addr, name)
		}
		return v
	}
	outcome := func(addr, o string) float64 {
		return metric(addr, resumptionsName, map[string]string{"outcome": o})
	}
	// A cut during a download: one resumption each side.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cut := &cutter{tn: tn, marks: []int64{256 << 10}}
	if err := download(ctx, tn, 2<<20, cut.progress); err != nil {
		t.Fatal(err)
	}
	if v := outcome(cli, "resumed"); v != 1 {
		t.Errorf("client resumed %v, want 1", v)
	}
	if v := outcome(srv, "resumed"); v != 1 {
		t.Errorf("server resumed %v, want 1", v)
	}
	// The session waits detached once, whether the server saw the cut
	// first or the resumption took the old link over.
	if v := metric(srv, "usocks_sessions_detached_total", nil); v != 1 {
		t.Errorf("server detached %v, want 1", v)
	}
	if v := outcome(srv, "taken_over"); v > 1 {
		t.Errorf("server taken over %v, want at most 1", v)
	}
	// Acknowledged: nothing held.
	for _, addr := range []string{cli, srv} {
		waitFor(t, addr+" resend buffers empty", 10*time.Second, func() bool {
			return metric(addr, "usocks_resend_buffer_bytes", nil) == 0
		})
	}
	// The backend goes down with bytes unacknowledged: they wait in the
	// client's resend buffer, the server's session waits detached.
	c := tn.dial(modeEcho)
	defer c.Close()
	tn.relay.down.Store(true)
	tn.relay.cut()
	const pending = 10_000
	if _, err := c.Write(make([]byte, pending)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to keep the unsent bytes", 10*time.Second, func() bool {
		return metric(cli, "usocks_resend_buffer_bytes", nil) >= pending
	})
	waitFor(t, "a detached session", 10*time.Second, func() bool {
		return metric(srv, "usocks_sessions_detached", nil) == 1
	})
	// It expires; the client's resumption is answered "new".
	waitFor(t, "the expiry timer", 10*time.Second, func() bool { return fc.armed() == 1 })
	fc.Advance(10 * time.Second)
	waitFor(t, "the detached session to expire", 10*time.Second, func() bool { return outcome(srv, "expired") == 1 })
	if v := metric(srv, "usocks_sessions_detached", nil); v != 0 {
		t.Errorf("detached after expiry: %v", v)
	}
	tn.relay.down.Store(false)
	waitFor(t, "the client to start over", 10*time.Second, func() bool { return outcome(cli, "new") == 1 })
	if v := outcome(srv, "new"); v < 1 {
		t.Errorf("server new %v, want ≥ 1 (every offer it no longer knows)", v)
	}
	tn.waitSession()
	if err := echoThrough(ctx, tn, 10_000, 2); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{cli, srv} {
		waitFor(t, addr+" resend buffers empty after the new session", 10*time.Second, func() bool {
			return metric(addr, "usocks_resend_buffer_bytes", nil) == 0
		})
	}
	if v := outcome(cli, "expired"); v != 0 {
		t.Errorf("client expired %v: the server answered in time", v)
	}
	if v := outcome(srv, "lost"); v != 0 {
		t.Errorf("server lost %v", v)
	}
}
