package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cleanCapture copies a capture file without the events of one session.
func cleanCapture(t *testing.T, path, drop string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	var out strings.Builder
	for i, l := range lines {
		if f := strings.Fields(l); i < 2 || len(f) < 2 || f[1] != drop {
			out.WriteString(l)
		}
	}
	p := filepath.Join(t.TempDir(), "clean.capture")
	if err := os.WriteFile(p, []byte(out.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The command line as a user meets it: help per command, version, check
// and exit statuses.
func TestCommandLine(t *testing.T) {
	good := writeConfig(t, "client:\n  key: \"3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+4=\"\n  port: 1080\n")
	bad := writeConfig(t, "client:\n  key: \"3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+4=\"\n  keepalive: 10\n  udp: maybe\n  prot: 1\nserver:\n  key: short\n  max_pending: -1\n")
	captures := filepath.Join("..", "..", "testdata", "captures")
	// The test capture's first session ends in a tampered record; its
	// second is clean.
	clean := cleanCapture(t, filepath.Join(captures, "v2-plaintext.capture"), "1")
	cases := []struct {
		name     string
		args     []string
		code     int
		stdout   []string // each must appear in stdout
		stderr   []string // each must appear in stderr
		notInOut []string // none may appear in stdout
	}{
		{"version", []string{"version"}, 0, []string{"usocks ", "protocols: v2 (default), v1 (legacy)", "go1."}, nil, nil},
		{"--version", []string{"--version"}, 0, []string{"protocols: v2"}, nil, nil},
		{"help", []string{"help"}, 0, []string{"usocks check -c FILE", "usocks version"}, nil, nil},
		{"help client", []string{"help", "client"}, 0, []string{"usage: usocks client", "-c string", "-log-level"}, nil, []string{"-once", "-streams"}},
		{"help demo", []string{"help", "demo"}, 0, []string{"usage: usocks demo", "-once", "-streams"}, nil, []string{"-capture", "-c string"}},
		{"help server", []string{"help", "server"}, 0, []string{"usage: usocks server", "-capture"}, nil, []string{"-once"}},
		{"help genkey", []string{"help", "genkey"}, 0, []string{"usage: usocks genkey"}, nil, []string{"flags:"}},
		{"help check", []string{"help", "check"}, 0, []string{"usage: usocks check"}, nil, nil},
		{"help link", []string{"help", "link"}, 0, []string{"usage: usocks link", "-qr", "-host"}, nil, nil},
		{"help client has --link", []string{"help", "client"}, 0, []string{"-link", "-listen"}, nil, nil},
		{"bad link", []string{"client", "--link", "usocks://nokey@h:1/"}, 1, nil, []string{"link: key:"}, nil},
		{"help replay", []string{"help", "replay"}, 0, []string{"usage: usocks replay", "-key"}, nil, nil},
		{"help unknown", []string{"help", "frobnicate"}, 2, nil, []string{`unknown command "frobnicate"`}, nil},
		{"client -h", []string{"client", "-h"}, 0, nil, []string{"usage: usocks client", "-capture"}, []string{"-once"}},
		{"genkey -h prints help, not a key", []string{"genkey", "-h"}, 0, nil, []string{"usage: usocks genkey"}, []string{"="}},
		{"demo flag on client", []string{"client", "--once"}, 1, nil, []string{"-once", "usocks help client"}, nil},
		{"genkey argument", []string{"genkey", "extra"}, 1, nil, []string{`unexpected argument "extra"`}, nil},
		{"check good", []string{"check", "-c", good}, 0, []string{": ok", "client: v2 plain_tcp to 127.0.0.1:4194, apps on 127.0.0.1:1080"}, nil, nil},
		{"check bad", []string{"check", "-c", bad}, 1, nil, []string{
			"client.keepalive: want a duration like 15s, got 10 (line 3)",
			"client.udp: want true or false, got maybe (line 4)",
			"client.prot: unknown key (line 5)",
			"server.max_pending: must be at least 1",
			"server.key: a passphrase needs at least 16 characters",
			"5 problems",
		}, nil},
		{"check missing file", []string{"check", "-c", filepath.Join(t.TempDir(), "none.yaml")}, 1, nil, []string{"no such file"}, nil},
		{"check no file", []string{"check"}, 1, nil, []string{"-c FILE is required"}, nil},
		{"replay clean", []string{"replay", clean, "--key", "dXNvY2tzIGNhcHR1cmUgdGVzdCBrZXkgKHB1YmxpYyk="}, 0, []string{"0 errors"}, nil, nil},
		{"replay tampered", []string{"replay", filepath.Join(captures, "v2-plaintext.capture"), "--key", "dXNvY2tzIGNhcHR1cmUgdGVzdCBrZXkgKHB1YmxpYyk="}, 1, []string{"1 errors"}, []string{"1 errors (see the listing)"}, nil},
		{"replay wrong key", []string{"replay", filepath.Join(captures, "v1.capture"), "--key", "not the key"}, 1, []string{"error"}, []string{"errors (see the listing)"}, nil},
		{"analyze", []string{"analyze", filepath.Join(captures, "v2-plaintext.capture")}, 0, []string{"taken at the server, 2 sessions", "packet sizes, in (client → server)", "burst bytes median"}, nil, nil},
		{"analyze json", []string{"analyze", "--json", "--mss", "536", filepath.Join(captures, "v1.capture")}, 0, []string{`"MSS": 536`, `"Protocol": "v1"`}, nil, nil},
		{"analyze not a capture", []string{"analyze", good}, 1, nil, []string{"not a usocks capture file"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := usocks(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			for _, w := range tc.notInOut {
				if strings.Contains(out, w) {
					t.Errorf("stdout has %q:\n%s", w, out)
				}
			}
		})
	}
}

// A client run from a share link made by `usocks link` carries data
// (every byte SHA-256 checked by EchoCheck), and --qr prints a QR code.
func TestClientFromLink(t *testing.T) {
	tport, key, bport, cport := tunnelSetup(t)
	cfg := writeConfig(t, fmt.Sprintf("server:\n  backend: {port: %d}\n  key: %q\n  frontend: {server: 127.0.0.1, port: %s}\n",
		bport, key, tport))
	_, stderr, code := usocks(t, "link", "-c", cfg)
	if code == 0 || !strings.Contains(stderr, "--host") {
		t.Fatalf("a server on all addresses needs --host: exit %d %s", code, stderr)
	}
	out, stderr, code := usocks(t, "link", "-c", cfg, "--host", "127.0.0.1", "--qr")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || !strings.HasPrefix(lines[0], "usocks://") || len(lines) < 20 || !strings.Contains(out, "█") {
		t.Fatalf("link: exit %d\n%s%s", code, out, stderr)
	}
	link := lines[0]
	srv := start(t, "server", "-c", cfg)
	waitListening(t, bport)
	cli := start(t, "client", "--link", link, "--listen", fmt.Sprintf("127.0.0.1:%d", cport))
	waitListening(t, cport)
	echoThrough(t, cport, 4, 256<<10, cli, srv)
	if code := cli.stop(t); code != 0 {
		t.Errorf("client exit %d\n%s", code, cli.stderr)
	}
	if code := srv.stop(t); code != 0 {
		t.Errorf("server exit %d\n%s", code, srv.stderr)
	}
	// A link and a config file are exclusive.
	if _, stderr, code := usocks(t, "client", "--link", link, "-c", cfg); code == 0 || !strings.Contains(stderr, "not both") {
		t.Fatalf("--link with -c: exit %d %s", code, stderr)
	}
}

// As a systemd Type=notify service: the server says READY=1 on
// $NOTIFY_SOCKET once it listens; SIGHUP reloads the config (RELOADING=1,
// then READY=1) while a transfer runs, which completes byte-exact; a bad
// config is refused and the old one stays; SIGTERM says STOPPING=1.
func TestServiceNotifyAndReload(t *testing.T) {
	tport, key, bport, cport := tunnelSetup(t)
	serverText := "server:\n  backend: {address: 127.0.0.1, port: %d}\n  key: %q\n  frontend: {server: 127.0.0.1, port: %s}\n  max_streams: %s\n"
	cfg := writeConfig(t, fmt.Sprintf(serverText, bport, key, tport, "100"))
	sock := filepath.Join(t.TempDir(), "notify.sock")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	read := func(want string) {
		t.Helper()
		_ = pc.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 512)
		n, err := pc.Read(buf)
		if err != nil || !strings.Contains(string(buf[:n]), want) {
			t.Fatalf("notify: %q %v, want %s", buf[:n], err, want)
		}
	}
	srv := startEnv(t, []string{"NOTIFY_SOCKET=" + sock}, "server", "-c", cfg)
	read("READY=1")
	// Ready means listening.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", bport))
	if err != nil {
		t.Fatalf("READY before listening: %v", err)
	}
	c.Close()
	cliCfg := writeConfig(t, fmt.Sprintf("client:\n  backend: {server: 127.0.0.1, port: %d}\n  key: %q\n  address: 127.0.0.1\n  port: %d\n", bport, key, cport))
	cli := start(t, "client", "-c", cliCfg)
	waitListening(t, cport)
	app, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", cport))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	sent, got := sha256.New(), sha256.New()
	round := func() {
		t.Helper()
		buf := make([]byte, 1<<20)
		_, _ = rand.Read(buf)
		sent.Write(buf)
		errc := make(chan error, 1)
		go func() { _, err := app.Write(buf); errc <- err }()
		echo := make([]byte, len(buf))
		_ = app.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(app, echo); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		got.Write(echo)
	}
	waitLog := func(p *process, want string, n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(p.stderr.String(), want) < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if p.cmd.ProcessState != nil || strings.Count(p.stderr.String(), want) < n {
			t.Fatalf("no %q after SIGHUP:\n%s", want, p.stderr)
		}
	}
	round()
	writeConfigAt(t, cfg, fmt.Sprintf(serverText, bport, key, tport, "200"))
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	read("RELOADING=1")
	read("READY=1")
	waitLog(srv, `msg="config reloaded" changed=server.max_streams`, 1)
	round()
	writeConfigAt(t, cfg, fmt.Sprintf(serverText, bport, key, tport, "0x"))
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	read("RELOADING=1")
	read("READY=1") // still running, on the old config
	waitLog(srv, "config reload refused", 1)
	if !strings.Contains(srv.stderr.String(), "server.max_streams") {
		t.Fatalf("the refusal does not name the key:\n%s", srv.stderr)
	}
	round()
	_ = cli.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(cli, `msg="config reloaded" changed=nothing`, 1)
	round()
	_ = app.(*net.TCPConn).CloseWrite()
	if n, err := io.Copy(io.Discard, app); n != 0 || err != nil {
		t.Fatalf("after the echo: %d bytes, %v", n, err)
	}
	if a, b := sent.Sum(nil), got.Sum(nil); !bytes.Equal(a, b) {
		t.Fatalf("sha256 sent %x, received %x", a, b)
	}
	if code := cli.stop(t); code != 0 {
		t.Fatalf("client exit %d\n%s", code, cli.stderr)
	}
	if code := srv.stop(t); code != 0 {
		t.Fatalf("exit %d after SIGHUP and SIGTERM\n%s", code, srv.stderr)
	}
	read("STOPPING=1")
	if n := strings.Count(srv.stderr.String(), "session established"); n != 1 {
		t.Fatalf("%d sessions, want the one throughout the reloads\n%s", n, srv.stderr)
	}
}
