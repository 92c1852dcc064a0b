package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"usocks/runner"
)

// childEnv makes the test binary act as the usocks binary (`bench target`,
// `server -c`, `client -c`) for the smoke test's child processes.
const childEnv = "USOCKS_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(child(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// child is a minimal cmd/usocks for the subcommands the bench starts.
func child(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := func() error {
		if len(args) >= 2 && args[0] == "bench" && args[1] == "target" {
			return RunTarget(ctx, args[2:], os.Stdout, os.Stderr)
		}
		if len(args) == 0 || (args[0] != "server" && args[0] != "client") {
			return fmt.Errorf("unknown child command %q", args)
		}
		fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
		file := fs.String("c", "", "config")
		level := fs.String("log-level", "warn", "log level")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		logger, err := runner.NewLogger(*level, false, os.Stderr)
		if err != nil {
			return err
		}
		cfg, err := runner.LoadConfig(*file)
		if err != nil {
			return err
		}
		if args[0] == "server" {
			s, err := runner.NewServer(cfg.Server, logger)
			if err != nil {
				return err
			}
			return s.Run(ctx)
		}
		c, err := runner.NewClient(cfg.Client, logger)
		if err != nil {
			return err
		}
		return c.Run(ctx)
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "usocks: %v\n", err)
		return 1
	}
	return 0
}

// TestSmoke runs the bench with tiny sizes against direct TCP and usocks
// v2, as real processes (this test binary stands in for usocks).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	t.Setenv(childEnv, "1")
	sc := Scale{Runs: 2, Bulk: 100 * time.Millisecond, RoundTrips: 200, MsgSize: 64,
		Connect: 100 * time.Millisecond, ConnConcurrency: 4, ManyStreams: 8, ManyBytes: 64 << 10, IdleStreams: 20,
		Settle: 100 * time.Millisecond, TTFBSamples: 1}
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rep, err := Run(ctx, Options{Tunnels: []string{V2, Direct}, Scale: sc, Exe: os.Args[0], Budget: 80 * time.Second, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Tunnels) != 2 || rep.Tunnels[0].Key != Direct || rep.Tunnels[1].Key != V2 {
		t.Fatalf("tunnels: %+v", rep.Tunnels)
	}
	for _, tr := range rep.Tunnels {
		if tr.Unavailable != "" {
			t.Fatalf("%s: n/a: %s\nlog:\n%s", tr.Name, tr.Unavailable, log.String())
		}
		for k, e := range tr.Errors {
			t.Errorf("%s: %s: %s", tr.Name, k, e)
		}
		want := []string{"up_gbps", "down_gbps", "rr_p50_us", "rr_p99_us", "conn_per_s", "conn_p99_ms", "many_s", "many_lost_bytes"}
		if tr.Key == V2 {
			want = append(want, "rss_idle_client_mib", "rss_idle_server_mib", "rss_streams_client_mib",
				"rss_streams_server_mib", "cpu_client_s", "cpu_server_s", "rss_load_client_mib", "rss_load_server_mib",
				"rss_settled_client_mib", "rss_settled_server_mib",
				"rr_cpu_client_us", "rr_cpu_server_us", "conn_cpu_client_us", "conn_cpu_server_us")
		}
		for _, k := range want {
			if tr.Metrics[k] == nil {
				t.Errorf("%s: no %s", tr.Name, k)
			}
		}
		if m := tr.Metrics["many_lost_bytes"]; m != nil && m.Median != 0 {
			t.Errorf("%s: lost %v bytes", tr.Name, m.Median)
		}
		if m := tr.Metrics["up_gbps"]; m != nil && len(m.Runs) != 2 {
			t.Errorf("%s: %d bulk runs", tr.Name, len(m.Runs))
		}
	}
	if len(rep.TTFB) != 2*len(ttfbPaths) {
		t.Errorf("time to first byte: %d results, want %d", len(rep.TTFB), 2*len(ttfbPaths))
	}
	for _, r := range rep.TTFB {
		// Each path costs at least the one round trip of its data.
		if r.Error != "" || r.Samples != 1 || r.P50RTT < 1 {
			t.Errorf("time to first byte %+v", r)
		}
	}
	var out bytes.Buffer
	if err := rep.WriteTable(&out, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "usocks v2") || !strings.Contains(out.String(), "client-side socks5") {
		t.Errorf("table:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}

// TestUnavailable: without shadowsocks-libev its row is n/a with the
// reason, and no process is started.
func TestUnavailable(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no ss-server
	sc := QuickScale()
	rep, err := Run(context.Background(), Options{Tunnels: []string{SS}, Scale: sc, Exe: os.Args[0], Budget: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Tunnels[0].Unavailable; got != "shadowsocks-libev not installed" {
		t.Errorf("n/a reason %q", got)
	}
}
