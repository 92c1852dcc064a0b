package runner

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The original program's sample config (spec §9), with protocol: v1 added.
const originalSample = `
client:
  backend: &backend
    type: plain_tcp
    server: remotehost
    port: 4194
  key: &key preshared_key
  address: localhost
  port: 1080
  protocol: v1
server:
  backend: *backend
  frontend:
    type: redirect
    server: localhost
    port: 1080
  key: *key
  protocol: v1
`

func TestOriginalSampleConfigRunsAsV1(t *testing.T) {
	c, err := ParseConfig([]byte(originalSample))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := c.Server.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Client.ServerAddr() != "remotehost:4194" || c.Client.ListenAddr() != "localhost:1080" {
		t.Fatalf("client addresses %s %s", c.Client.ServerAddr(), c.Client.ListenAddr())
	}
	if c.Server.TargetAddr() != "localhost:1080" || c.Server.ListenAddr() != ":4194" {
		t.Fatalf("server addresses %s %s", c.Server.TargetAddr(), c.Server.ListenAddr())
	}
	// The original's key is a v1 passphrase; under v2 it is refused.
	v2 := strings.ReplaceAll(originalSample, "  protocol: v1\n", "")
	c, err = ParseConfig([]byte(v2))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.PSK("client"); err == nil || !strings.Contains(err.Error(), "client.key") {
		t.Fatalf("v2 with the original's weak key: %v", err)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	const key = "key: 3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+4=\n"
	cases := []struct{ name, yaml, want string }{
		{"unknown top", "clients: {}\n", "clients: unknown key"},
		{"unknown nested", "server:\n  " + key + "  frontend: {prot: 1}\n", "server.frontend.prot: unknown key"},
		{"unknown in anchor", "client:\n  backend: &b {typo: 1}\n  " + key + "server:\n  backend: *b\n", "client.backend.typo: unknown key"},
		{"port range", "client:\n  " + key + "  port: 0x10000\n", "client.port"},
		{"backend port", "server:\n  " + key + "  backend: {port: -1}\n", "server.backend.port"},
		{"protocol", "client:\n  " + key + "  protocol: v9\n", "client.protocol"},
		{"multi_tcp v2 needs resumption", "client:\n  " + key + "  resume_timeout: -1s\n  backend: {type: multi_tcp}\n", "client.backend.type"},
		{"multi_tcp v2 lanes", "client:\n  " + key + "  backend: {type: multi_tcp, number: 17}\n", "client.backend.number"},
		{"cipher", "server:\n  " + key + "  cipher: des\n", "server.cipher"},
		{"v1 cipher", "server:\n  key: k\n  protocol: v1\n  cipher: aes-256-gcm\n", "server.cipher"},
		{"missing key", "client:\n  port: 1080\n", "client.key"},
		{"replay window", "server:\n  " + key + "  replay_window: 5s\n", "server.replay_window"},
		{"drain timeout", "server:\n  " + key + "  drain_timeout: -1s\n", "server.drain_timeout"},
		{"drain timeout too long", "server:\n  " + key + "  drain_timeout: 2h\n", "server.drain_timeout"},
		{"max streams", "client:\n  " + key + "  max_streams: 70000\n", "client.max_streams"},
		{"session memory", "server:\n  " + key + "  session_memory_mib: -1\n", "server.session_memory_mib"},
		{"total memory", "server:\n  " + key + "  total_memory_mib: 2000000\n", "server.total_memory_mib"},
		{"max sessions", "server:\n  " + key + "  max_sessions: -1\n", "server.max_sessions"},
		{"sessions per user", "server:\n  " + key + "  max_sessions_per_user: 2000000\n", "server.max_sessions_per_user"},
		{"session dials", "server:\n  " + key + "  session_max_dials: 70000\n", "server.session_max_dials"},
		{"session dial rate", "server:\n  " + key + "  session_dial_rate: -5\n", "server.session_dial_rate"},
		{"session udp", "server:\n  " + key + "  session_max_udp: 70000\n", "server.session_max_udp"},
		{"frontend type", "server:\n  " + key + "  frontend: {type: ftp}\n", "server.frontend.type"},
		{"tls needs v2", "client:\n  key: k\n  protocol: v1\n  backend: {type: tls}\n", "client.backend.type"},
		{"tls server needs a cert", "server:\n  " + key + "  backend: {type: tls}\n", "server.backend.tls_cert"},
		{"tls server needs a key", "server:\n  " + key + "  backend: {type: tls, tls_cert: c.pem}\n", "server.backend.tls_key"},
		{"bad yaml", "client: [\n", "config:"},
		{"published sample key", "client:\n  key: " + SampleKey + "\n", "client.key: this is the sample key"},
		{"sample key as a client's", "server:\n  " + key + "  clients: {bob: " + SampleKey + "}\n", "server.clients.bob: this is the sample key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validateYAML(tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			var ce *ConfigError
			if strings.Contains(tc.want, ".") && !errors.As(err, &ce) {
				t.Fatalf("error %T is not a ConfigError", err)
			}
		})
	}
}

// A value of the wrong type names its key, says what the key wants and
// where the value is; every problem of a file is reported at once.
func TestConfigTypeErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"duration", "client:\n  keepalive: 10\n", []string{"client.keepalive: want a duration like 15s, got 10 (line 2)"}},
		{"duration word", "server:\n  idle_timeout: forever\n", []string{"server.idle_timeout: want a duration like 15s, got forever (line 2)"}},
		{"number", "client:\n  port: \"eighty\"\n", []string{`client.port: want a whole number, got "eighty" (line 2)`}},
		{"bool", "client:\n  udp: maybe\n", []string{"client.udp: want true or false, got maybe (line 2)"}},
		{"list", "server:\n  frontend: {allow: 10.0.0.0/8}\n", []string{"server.frontend.allow: want a list, got 10.0.0.0/8 (line 2)"}},
		{"map", "server:\n  clients: [a, b]\n", []string{"server.clients: want a mapping of name: value, got a list (line 2)"}},
		{"section", "client:\n  backend: plain_tcp\n", []string{"client.backend: want a section of keys, got plain_tcp (line 2)"}},
		{"negative count", "client:\n  rekey_after: -5\n", []string{"client.rekey_after: want a whole number ≥ 0, got -5 (line 2)"}},
		{"all at once", "client:\n  keepalive: 3\n  prot: 1\nserver:\n  max_streams: often\n", []string{
			"client.keepalive: want a duration like 15s, got 3 (line 2)",
			"client.prot: unknown key (line 3)",
			"server.max_streams: want a whole number, got often (line 5)",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("errors:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != strings.SplitN(tc.want[0], ":", 2)[0] {
				t.Fatalf("errors.As: %v", ce)
			}
		})
	}
}

// CheckConfig reports every validation problem of every section, not
// only the first.
func TestCheckConfigReportsEveryProblem(t *testing.T) {
	const key = "key: 3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+4=\n"
	cases := []struct {
		name, yaml string
		problems   []string
		sections   int
	}{
		{"good", "client:\n  " + key + "server:\n  " + key, nil, 2},
		{"empty", "", []string{"client: no client: or server: section"}, 0},
		{"several", "client:\n  " + key + "  port: 70000\n  max_streams: 0x20000\n  protocol: v3\nserver:\n  key: short\n", []string{
			"client.protocol: \"v3\": want v2 or v1",
			"client.max_streams: must be 1..65534",
			"client.port: 70000: must be 1..65535",
			"server.key: a passphrase needs at least 16 characters (or use a key from `usocks genkey`)",
		}, 0},
		{"type and range", "server:\n  " + key + "  salt_cache: 10\n  probe_timeout: 1\n", []string{
			"server.probe_timeout: want a duration like 15s, got 1 (line 4)",
			"server.salt_cache: must be at least 1000",
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := CheckConfig(p)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, pr := range r.Problems {
				got = append(got, pr.Error())
			}
			if strings.Join(got, "|") != strings.Join(tc.problems, "|") {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.problems, "\n"))
			}
			if len(r.Sections) != tc.sections {
				t.Fatalf("sections %q", r.Sections)
			}
		})
	}
}

// A key that looks like base64 with a typo is taken as a passphrase, so
// both sides warn; a good key and a real passphrase do not.
func TestDamagedBase64KeyWarns(t *testing.T) {
	good := newKey(t)
	for _, c := range []struct {
		key  string
		warn bool
	}{
		{good, false},
		{good[:len(good)-3], true},
		{"correct horse battery staple, said nobody", false},
	} {
		logger, hook := testLogger(t)
		cfg := &ClientConfig{Common: Common{Key: c.key, Backend: BackendConfig{Server: "127.0.0.1", Port: 1}}}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, err := NewClient(cfg, logger); err != nil {
			t.Fatal(err)
		}
		warned := false
		for _, e := range hook.AllEntries() {
			warned = warned || strings.Contains(e.Message, "looks like base64 with a typo")
		}
		if warned != c.warn {
			t.Errorf("key %q: warned %v, want %v", c.key, warned, c.warn)
		}
	}
}
