package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
