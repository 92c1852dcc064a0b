package runner

import (
	"errors"
	"strings"
	"testing"
	"time"
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
		{"multi_tcp needs v1", "client:\n  " + key + "  backend: {type: multi_tcp}\n", "client.backend.type"},
		{"cipher", "server:\n  " + key + "  cipher: des\n", "server.cipher"},
		{"v1 cipher", "server:\n  key: k\n  protocol: v1\n  cipher: aes-256-gcm\n", "server.cipher"},
		{"missing key", "client:\n  port: 1080\n", "client.key"},
		{"replay window", "server:\n  " + key + "  replay_window: 5s\n", "server.replay_window"},
		{"max streams", "client:\n  " + key + "  max_streams: 70000\n", "client.max_streams"},
		{"frontend type", "server:\n  " + key + "  frontend: {type: ftp}\n", "server.frontend.type"},
		{"tls needs v2", "client:\n  key: k\n  protocol: v1\n  backend: {type: tls}\n", "client.backend.type"},
		{"tls server needs a cert", "server:\n  " + key + "  backend: {type: tls}\n", "server.backend.tls_cert"},
		{"tls server needs a key", "server:\n  " + key + "  backend: {type: tls, tls_cert: c.pem}\n", "server.backend.tls_key"},
		{"bad yaml", "client: [\n", "config:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.yaml))
			if err == nil {
				if c.Client != nil {
					err = c.Client.Validate()
				}
				if err == nil && c.Server != nil {
					err = c.Server.Validate()
				}
			}
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

func TestBackoff(t *testing.T) {
	b := &Backoff{Min: 100 * time.Millisecond, Max: time.Second, Healthy: 10 * time.Second, Jitter: func() float64 { return 1 }}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Next(time.Millisecond); got != w*time.Millisecond {
			t.Fatalf("attempt %d: %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := b.Next(time.Minute); got != 100*time.Millisecond {
		t.Fatalf("after a healthy session: %v, want the minimum again", got)
	}
	b.Jitter = func() float64 { return 0 }
	if got := b.Next(time.Millisecond); got != 100*time.Millisecond {
		t.Fatalf("zero jitter: %v, want half of 200ms", got)
	}
}
