package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"usocks/runner"
)

func TestMedianPercentile(t *testing.T) {
	if !math.IsNaN(Median(nil)) {
		t.Error("median of nothing should be NaN")
	}
	if got := Median([]float64{1, 2, 9}); got != 2 {
		t.Errorf("odd median = %v", got)
	}
	if got := Median([]float64{1, 2, 4, 9}); got != 3 {
		t.Errorf("even median = %v", got)
	}
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0.1, 1}, {0, 1}} {
		if got := Percentile(d, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 50) != 0 {
		t.Error("percentile of nothing should be 0")
	}
	if got := Percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one = %v", got)
	}
}

func TestNewMetric(t *testing.T) {
	if NewMetric() != nil {
		t.Error("no runs should give nil")
	}
	m := NewMetric(3, 1, 2)
	if m.Median != 2 || m.Min != 1 || m.Max != 3 {
		t.Errorf("metric = %+v", m)
	}
	if m.Runs[0] != 3 {
		t.Errorf("runs reordered: %v", m.Runs)
	}
	if got := Gbps(125_000_000, time.Second); got != 1 {
		t.Errorf("Gbps = %v", got)
	}
	if Gbps(1, 0) != 0 {
		t.Error("Gbps over no time should be 0")
	}
}

func TestFormatNumbers(t *testing.T) {
	for v, want := range map[float64]string{2.314: "2.31", 12.34: "12.3", 123.4: "123", 40123: "40123", 0: "0.00"} {
		if got := fmtNum(v); got != want {
			t.Errorf("fmtNum(%v) = %q, want %q", v, got, want)
		}
	}
	if fmtNum(math.NaN()) != "-" {
		t.Error("NaN should print as -")
	}
	for _, c := range []struct {
		v, base float64
		want    string
	}{{3.2, 2, "1.6x"}, {1, 4, "0.25x"}, {50, 2, "25x"}, {1, 0, ""}} {
		if got := fmtRatio(c.v, c.base); got != c.want {
			t.Errorf("fmtRatio(%v, %v) = %q, want %q", c.v, c.base, got, c.want)
		}
	}
	if sizeStr(1<<20) != "1MiB" || sizeStr(256<<10) != "256KiB" || sizeStr(1000) != "1000B" {
		t.Error("sizeStr")
	}
	if countStr(1000) != "1k" || countStr(200) != "200" {
		t.Error("countStr")
	}
}

func TestParseTunnels(t *testing.T) {
	got, err := ParseTunnels("v1, ss,direct,v1")
	if err != nil || strings.Join(got, ",") != "direct,ss,v1" {
		t.Errorf("got %v, %v", got, err)
	}
	if got, _ := ParseTunnels("all"); len(got) != len(AllTunnels) {
		t.Errorf("all = %v", got)
	}
	if got, _ := ParseTunnels("shadowsocks-libev"); len(got) != 1 || got[0] != SS {
		t.Errorf("alias = %v", got)
	}
	if got, _ := ParseTunnels("v2,sing-box,v2off"); strings.Join(got, ",") != "sb,sbmux,v2off,v2" {
		t.Errorf("sing-box alias and order = %v", got)
	}
	if got, _ := ParseTunnels("v2,v2off-noresume,all"); len(got) != len(AllTunnels)+1 || got[5] != V2OffNoResume {
		t.Errorf("a tunnel outside all, by name = %v", got)
	}
	for _, bad := range []string{"", "wireguard", " , "} {
		if _, err := ParseTunnels(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestSingBoxConfigs(t *testing.T) {
	for _, mux := range []bool{false, true} {
		srv, cli, err := singBoxConfigs(mux, "cGFzcw==", 1001, 1002, "127.0.0.1", 1003)
		if err != nil {
			t.Fatal(err)
		}
		var s, c struct {
			Inbounds  []map[string]any `json:"inbounds"`
			Outbounds []map[string]any `json:"outbounds"`
		}
		if err := errors.Join(json.Unmarshal(srv, &s), json.Unmarshal(cli, &c)); err != nil {
			t.Fatal(err)
		}
		in, out, local := s.Inbounds[0], c.Outbounds[0], c.Inbounds[0]
		switch {
		case in["type"] != "shadowsocks" || in["method"] != SBMethod || in["listen_port"] != 1001.0:
			t.Errorf("mux %v: server inbound %v", mux, in)
		case out["type"] != "shadowsocks" || out["server_port"] != 1001.0 || out["password"] != "cGFzcw==":
			t.Errorf("mux %v: client outbound %v", mux, out)
		case local["type"] != "direct" || local["listen_port"] != 1002.0 || local["override_port"] != 1003.0:
			t.Errorf("mux %v: client inbound %v", mux, local)
		case (out["multiplex"] != nil) != mux || (in["multiplex"] != nil) != mux:
			t.Errorf("mux %v: multiplex %v / %v", mux, out["multiplex"], in["multiplex"])
		}
	}
}

func TestUsocksConfigDefense(t *testing.T) {
	for _, tc := range []struct{ defense, want string }{{"off", "\n  defense: off\n"}, {"standard", "\n  defense: standard\n"}, {"", ""}} {
		cfg := usocksConfig("v2", tc.defense, "k", 1, 2, "127.0.0.1", "3")
		if got := strings.Count(cfg, "defense:"); (tc.want == "") != (got == 0) || (tc.want != "" && !strings.Contains(cfg, tc.want)) {
			t.Errorf("defense %q: config\n%s", tc.defense, cfg)
		}
	}
}

func TestScaleValidate(t *testing.T) {
	for _, s := range []Scale{DefaultScale(), QuickScale()} {
		if err := s.validate(); err != nil {
			t.Error(err)
		}
	}
	s := QuickScale()
	s.Runs = 0
	if s.validate() == nil {
		t.Error("0 runs should be refused")
	}
	s = QuickScale()
	s.ManyStreams, s.ManyBytes = 2000, 2<<20
	if s.validate() == nil {
		t.Error("4 GB of payloads should be refused")
	}
}

func TestProcParsing(t *testing.T) {
	status := []byte("Name:\tusocks\nVmPeak:\t 1000 kB\nVmRSS:\t    6604 kB\nThreads:\t5\n")
	if kib, err := parseVmRSS(status); err != nil || kib != 6604 {
		t.Errorf("VmRSS = %d, %v", kib, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("missing VmRSS should fail")
	}
	// A command name with spaces and parentheses; utime 250, stime 50.
	stat := []byte("1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 100 1000 200")
	if d, err := parseStatCPU(stat); err != nil || d != 3*time.Second {
		t.Errorf("cpu = %v, %v", d, err)
	}
	if _, err := parseStatCPU([]byte("1234 (x) S 1")); err == nil {
		t.Error("short stat should fail")
	}
	tcp := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F91 0100007F:C000 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
`)
	tcp6 := []byte(`  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 0
`)
	ports := listeningPorts(tcp, tcp6)
	if !ports[8080] || !ports[80] || ports[8081] || len(ports) != 2 {
		t.Errorf("ports = %v", ports)
	}
}

func TestCPUAccounting(t *testing.T) {
	stat := []byte("cpu  100 5 50 1000 7 1 2 3 0 0\ncpu0 50 0 25 500 0 0 1 1 0 0\n")
	if d, err := parseCPUBusy(stat); err != nil || d != 1610*time.Millisecond {
		t.Errorf("busy = %v, %v", d, err)
	}
	if _, err := parseCPUBusy([]byte("intr 1 2 3\n")); err == nil {
		t.Error("no cpu line should fail")
	}
	self := []byte("99 (my (prog)) R 1 99 99 0 -1 0 0 0 0 0 100 50 20 30 20 0 1 0 5 1 1")
	if d, err := parseSelfCPU(self); err != nil || d != 2*time.Second {
		t.Errorf("self = %v, %v", d, err)
	}
	if s := sampleCPU(); s.ok {
		if d, ok := othersSince(s); !ok || d < 0 {
			t.Errorf("othersSince = %v, %v", d, ok)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 16}
	_, _ = tb.Write([]byte("first line\nsecond line that is long\n\n"))
	if got := tb.lastLine(); got != "e that is long" {
		t.Errorf("lastLine = %q", got)
	}
	if len(tb.String()) != 16 {
		t.Errorf("kept %d bytes", len(tb.String()))
	}
	if (&tailBuffer{max: 10}).lastLine() != "" {
		t.Error("empty buffer")
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:0", "[::1]:80", "localhost:1", "127.1.2.3:9"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"0.0.0.0:0", ":0", "10.0.0.1:80", "example.org:80", "nonsense"} {
		if checkLoopback(bad) == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}

func sampleReport() *Report {
	sc := QuickScale()
	mk := func(key string, up, rr, rss float64) *TunnelResult {
		return &TunnelResult{Key: key, Name: tunnelName(key), Metrics: map[string]*Metric{
			"up_gbps":             NewMetric(up, up*0.9, up*1.1),
			"rr_p50_us":           NewMetric(rr, rr+1, rr-1),
			"rss_idle_client_mib": NewMetric(rss),
			"many_lost_bytes":     NewMetric(0),
			"many_bad_streams":    NewMetric(0),
		}, Errors: map[string]string{}}
	}
	direct := mk(Direct, 16, 40, 0)
	delete(direct.Metrics, "rss_idle_client_mib")
	ss := mk(SS, 4, 120, 3)
	v2 := mk(V2, 2, 180, 6)
	v2.Errors["down_gbps"] = "boom"
	v2.Metrics["many_lost_bytes"] = NewMetric(512)
	v2.Metrics["many_bad_streams"] = NewMetric(2)
	v1 := &TunnelResult{Key: V1, Name: tunnelName(V1), Unavailable: "usocks v1 server exited: no v1 | here", Metrics: map[string]*Metric{}}
	return &Report{Scale: sc, Columns: Columns(sc), Tunnels: []*TunnelResult{direct, ss, v2, v1}, Pinned: true, Seconds: 12}
}

func TestWriteTable(t *testing.T) {
	rep := sampleReport()
	var b bytes.Buffer
	if err := rep.WriteTable(&b, false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	var head, v2, v1, direct string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "tunnel") && head == "":
			head = l
		case strings.HasPrefix(l, "usocks v2") && v2 == "":
			v2 = l
		case strings.HasPrefix(l, "usocks v1"):
			v1 = l
		case strings.HasPrefix(l, "direct TCP") && direct == "":
			direct = l
		}
	}
	for _, want := range []string{"2.00 (0.50x)", "180 (1.5x)", "6.00 (2.0x)", "512 (2 bad)", "err"} {
		if !strings.Contains(v2, want) {
			t.Errorf("v2 row lacks %q:\n%s", want, v2)
		}
	}
	if strings.Contains(direct, "x)") {
		t.Errorf("direct row has a ratio: %s", direct)
	}
	if !strings.Contains(v1, "n/a (usocks v1 server exited: no v1 | here)") {
		t.Errorf("v1 row: %q", v1)
	}
	// Columns line up: each figure ends where its heading ends.
	end := strings.Index(head, "up Gbit/s") + len("up Gbit/s")
	if !strings.HasPrefix(v2[end-len("2.00 (0.50x)"):], "2.00 (0.50x)") {
		t.Errorf("columns misaligned:\n%s\n%s", head, v2)
	}
	for _, want := range []string{"ranges (min–max of 3 runs)", "1.80–2.20", "error: usocks v2 default, down Gbit/s: boom", "load average"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	b.Reset()
	if err := rep.WriteTable(&b, true); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	if !strings.Contains(md, "| usocks v1 | n/a (usocks v1 server exited: no v1 \\| here) |") {
		t.Errorf("markdown n/a row:\n%s", md)
	}
	if !strings.Contains(md, "| --- | ---: |") {
		t.Errorf("markdown separator:\n%s", md)
	}
}

func TestWriteJSON(t *testing.T) {
	rep := sampleReport()
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Tunnels) != 4 || back.Tunnels[2].Metrics["up_gbps"].Median != 2 || back.Tunnels[3].Unavailable == "" {
		t.Errorf("round trip lost data: %s", b.String())
	}
}

// TestWorkloadsInProcess runs every workload briefly against an in-process
// target: the target's modes and the load generator agree.
func TestWorkloadsInProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	served := make(chan error, 1)
	tctx, stop := context.WithCancel(ctx)
	go func() { served <- NewTarget(ln, time.Minute).Serve(tctx) }()
	addr := ln.Addr().String()

	if v, err := BulkUp(ctx, addr, 30*time.Millisecond); err != nil || v <= 0 {
		t.Errorf("up: %v, %v", v, err)
	}
	if v, err := BulkDown(ctx, addr, 30*time.Millisecond); err != nil || v <= 0 {
		t.Errorf("down: %v, %v", v, err)
	}
	lat, err := RoundTrips(ctx, addr, 50, 64, 10*time.Second)
	if err != nil || len(lat) != 50 || lat[0] > lat[49] {
		t.Errorf("round trips: %d, %v", len(lat), err)
	}
	r := Connects(ctx, addr, 4, 50*time.Millisecond)
	if r.Done == 0 || r.Failed != 0 {
		t.Errorf("connects: %+v", r)
	}
	p := NewPayloads(8, 10_000)
	if m := Many(ctx, addr, p, 10*time.Second); m.Bad != 0 || m.Lost != 0 || m.Sent != 80_000 {
		t.Errorf("many: %+v", m)
	}
	conns, err := HoldIdle(ctx, addr, 20, 4)
	if err != nil || len(conns) != 20 {
		t.Errorf("idle: %d, %v", len(conns), err)
	}
	closeAll(conns)

	// A corrupted payload digest is reported as a bad stream.
	p.Digest[3][0] ^= 1
	if m := Many(ctx, addr, p, 10*time.Second); m.Bad != 1 || m.Lost != 10_000 {
		t.Errorf("corrupt: %+v", m)
	}
	stop()
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	// Nothing listens any more: the workloads fail instead of hanging.
	if _, err := BulkUp(ctx, addr, 10*time.Millisecond); err == nil {
		t.Error("up to a closed target should fail")
	}
}

// TestDelayRelay: every byte arrives, no sooner than the delay each way.
func TestDelayRelay(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const delay = 30 * time.Millisecond
	r := &delayRelay{ln: rl, to: echo.Addr().String(), delay: delay}
	r.wg.Go(r.serve)
	defer r.close()
	c, err := net.Dial("tcp", rl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("0123456789"), 10000)
	t0 := time.Now()
	go func() { _, _ = c.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(t0); el < 2*delay {
		t.Errorf("echo through the relay took %v, less than %v", el, 2*delay)
	}
	if !bytes.Equal(got, msg) {
		t.Error("the echo differs")
	}
}

// TestTTFBConfig: every path's config loads, with the policy, the relay
// as the client's backend and the frontend the path needs.
func TestTTFBConfig(t *testing.T) {
	target := netip.MustParseAddrPort("127.0.0.1:4000")
	for _, p := range ttfbPaths {
		for _, defense := range []string{"off", "standard"} {
			file := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(file, []byte(ttfbConfig("k3Y1mN5Tq2c9rW7uV0xZbA4dF6hJ8lP1sE3gI5oK7yM=", defense, p.frontend, p.listen, 1001, 1002, 1003, target)), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := runner.LoadConfig(file)
			if err != nil {
				t.Fatalf("%s/%s: %v", p.name, defense, err)
			}
			if cfg.Client.Backend.Port != 1002 || cfg.Client.Port != 1003 || cfg.Server.Frontend.Type != p.frontend ||
				cfg.Client.Defense != defense || cfg.Client.Listen.Type != p.listen {
				t.Errorf("%s/%s: %+v / %+v", p.name, defense, cfg.Client, cfg.Server.Frontend)
			}
		}
	}
}

// RoundTrips ends at its time limit: the round trips done by then are the
// result when there are enough of them (a paced tunnel), an error when
// there are too few (here none: the echo stops answering).
func TestRoundTripsTimeLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = NewTarget(ln, time.Minute).Serve(tctx) }()
	lat, err := RoundTrips(ctx, ln.Addr().String(), 1_000_000_000, 64, 300*time.Millisecond)
	if err != nil || len(lat) < MinRoundTrips || len(lat) >= 1_000_000_000 || lat[0] > lat[len(lat)-1] {
		t.Fatalf("partial run: %d round trips, %v; want at least %d, sorted", len(lat), err, MinRoundTrips)
	}

	// An echo that answers the mode byte and then nothing.
	mute, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	go func() {
		for {
			c, err := mute.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				if _, err := io.ReadFull(c, b); err == nil {
					_, _ = c.Write(b)
				}
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	if lat, err := RoundTrips(ctx, mute.Addr().String(), 10, 64, 200*time.Millisecond); err == nil {
		t.Fatalf("a mute echo gave %d round trips and no error", len(lat))
	}
}
