package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"usocks/runner"
)

// End-to-end tests through the real binary: built once, run as separate
// processes on loopback, stopped with signals like a user would.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "usocks-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "usocks")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		// -race needs cgo; fall back to a plain build.
		if out2, err2 := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err2 != nil {
			fmt.Fprintf(os.Stderr, "build: %v\n%s\n%s", err2, out, out2)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func usocks(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code == 0 {
		t.Fatalf("usocks %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func TestGenkey(t *testing.T) {
	a, _, code := usocks(t, "genkey")
	b, _, _ := usocks(t, "genkey")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a))
	if err != nil || len(k) != 32 {
		t.Fatalf("genkey printed %q: %d bytes, %v", a, len(k), err)
	}
	if a == b {
		t.Fatal("two genkey runs printed the same key")
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func writeConfig(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "config.yaml")
	writeConfigAt(t, p, body)
	return p
}

// writeConfigAt writes a config file at path (mode 600).
func writeConfigAt(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestBadStartupsAreOneClearLine(t *testing.T) {
	key, _, _ := usocks(t, "genkey")
	key = strings.TrimSpace(key)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	cases := []struct {
		name, cmd, config, want string
	}{
		{"unknown key", "server", "server:\n  key: " + key + "\n  frontend: {type: redirect, prot: 80}\n", "prot"},
		{"bad port", "client", "client:\n  key: " + key + "\n  port: 70000\n", "client.port"},
		{"short passphrase", "client", "client:\n  key: tooshort\n", "client.key"},
		{"key of wrong length", "server", "server:\n  key: \"AAAA\"\n", "server.key"},
		{"bad protocol", "server", "server:\n  key: " + key + "\n  protocol: v3\n", "server.protocol"},
		{"bad cipher", "client", "client:\n  key: " + key + "\n  cipher: rot13\n", "client.cipher"},
		{"no section", "client", "server:\n  key: " + key + "\n", "no client: section"},
		{"port in use", "server", fmt.Sprintf("server:\n  key: %s\n  backend: {address: 127.0.0.1, port: %d}\n", key, busyPort), "address already in use"},
		{"missing file", "server", "", "no such file"},
		{"tls cert unreadable", "server", "server:\n  key: " + key + "\n  backend: {type: tls, tls_cert: /nonexistent/c.pem, tls_key: /nonexistent/k.pem}\n", "server.backend.tls_cert"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "missing.yaml")
			if tc.config != "" {
				path = writeConfig(t, tc.config)
			}
			_, stderr, code := usocks(t, tc.cmd, "-c", path, "--log-level", "error")
			if code == 0 {
				t.Fatal("exit status 0")
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "goroutine") {
				t.Fatalf("stderr %q: want one line mentioning %q", stderr, tc.want)
			}
		})
	}
}

func TestDemoOnce(t *testing.T) {
	out, stderr, code := usocks(t, "demo", "--once", "--streams", "4", "--bytes", "200000")
	if code != 0 || !strings.Contains(out, "every byte checked with SHA-256") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
}

// syncBuffer is a bytes.Buffer safe to read while the child writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is a usocks client or server run as a child process.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
}

func start(t *testing.T, args ...string) *process { return startEnv(t, nil, args...) }

// startEnv starts usocks with env added to the test's environment.
func startEnv(t *testing.T, env []string, args ...string) *process {
	cmd := exec.Command(binary, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	e := new(syncBuffer)
	cmd.Stderr = e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, stderr: e}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit status.
func (p *process) stop(t *testing.T) int {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		t.Errorf("process did not stop within 15s of SIGTERM\n%s", p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

func waitListening(t *testing.T, port int) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %d", port)
}

// tunnelSetup starts an echo target (stopped at the end of the test) and
// returns its port, a fresh key and free backend and client ports.
func tunnelSetup(t *testing.T) (tport, key string, bport, cport int) {
	echo, err := runner.StartEcho()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	_, tport, _ = net.SplitHostPort(echo.Addr())
	key, _, _ = usocks(t, "genkey")
	return tport, strings.TrimSpace(key), freePort(t), freePort(t)
}

func testBinaryTunnel(t *testing.T, protocolLine string) {
	tport, key, bport, cport := tunnelSetup(t)
	// The original's layout: one file, anchors shared by both sections.
	cfg := writeConfig(t, fmt.Sprintf(`client:
  backend: &backend
    type: plain_tcp
    server: 127.0.0.1
    address: 127.0.0.1
    port: %d
  key: &key "%s"
  address: 127.0.0.1
  port: %d
%s
server:
  backend: *backend
  frontend:
    type: redirect
    server: 127.0.0.1
    port: %s
  key: *key
%s
`, bport, key, cport, protocolLine, tport, protocolLine))
	srv := start(t, "server", "-c", cfg)
	waitListening(t, bport)
	cli := start(t, "client", "-c", cfg)
	waitListening(t, cport)

	echoThrough(t, cport, 10, 1<<20, cli, srv)
	if code := cli.stop(t); code != 0 {
		t.Errorf("client exit %d after SIGTERM\n%s", code, cli.stderr)
	}
	// The client's CLOSE record ends the server's session cleanly.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(srv.stderr.String(), "session closed") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if code := srv.stop(t); code != 0 {
		t.Errorf("server exit %d after SIGTERM\n%s", code, srv.stderr)
	}
	if !strings.Contains(srv.stderr.String(), "session closed") {
		t.Errorf("server did not log a clean session end:\n%s", srv.stderr)
	}
	if strings.Contains(srv.stderr.String(), "level=error") || strings.Contains(cli.stderr.String(), "level=error") {
		t.Errorf("errors logged:\n%s\n%s", cli.stderr, srv.stderr)
	}
}

// echoThrough runs streams echo checks of size bytes each (every byte
// SHA-256 checked) through the client on port, at once.
func echoThrough(t *testing.T, port, streams, size int, cli, srv *process) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	for i := 0; i < streams; i++ {
		g.Go(func() error {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = runner.EchoCheck(gctx, c, size, uint64(i))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("%v\nclient log:\n%s\nserver log:\n%s", err, cli.stderr, srv.stderr)
	}
}

func TestBinaryTunnelV2(t *testing.T) { testBinaryTunnel(t, "") }

func TestBinaryTunnelV1(t *testing.T) { testBinaryTunnel(t, "  protocol: v1") }

// The sample config is complete except for its published key, which is
// refused with a message that says how to make one; with a fresh key it
// is valid, and its server listens on loopback only.
func TestSampleConfig(t *testing.T) {
	const path = "../../testdata/config/sample.yaml"
	_, stderr, code := usocks(t, "check", "-c", path)
	if code != 1 || strings.Count(stderr, "sample key published with usocks") != 2 || !strings.Contains(stderr, "usocks genkey") {
		t.Fatalf("check of the sample: exit %d\n%s", code, stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := usocks(t, "genkey")
	fresh := strings.ReplaceAll(string(b), runner.SampleKey, strings.TrimSpace(key))
	if fresh == string(b) {
		t.Fatal("the sample does not hold runner.SampleKey")
	}
	cfg, err := runner.ParseConfig([]byte(fresh))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Client == nil || cfg.Server == nil {
		t.Fatal("sample must have both sections")
	}
	if err := cfg.Client.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Server.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Server.ListenAddr(); got != "127.0.0.1:4194" {
		t.Fatalf("sample server listens on %s, want loopback only", got)
	}
	// Readable by everyone and holding a key: a warning, not a refusal.
	open := filepath.Join(t.TempDir(), "open.yaml")
	if err := os.WriteFile(open, []byte(fresh), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o640, false}, {0o644, true}} {
		if err := os.Chmod(open, tc.mode); err != nil {
			t.Fatal(err)
		}
		out, stderr, code := usocks(t, "check", "-c", open)
		if code != 0 || !strings.Contains(out, "ok") || strings.Contains(stderr, "chmod 600") != tc.warn {
			t.Fatalf("mode %04o: exit %d, warning wanted %v\n%s%s", tc.mode, code, tc.warn, out, stderr)
		}
	}
	_ = io.Discard
}
