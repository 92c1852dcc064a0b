package runner

import (
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/stages/frontend"
	"usocks/wire"
)

// Config is a usocks YAML file. One file may hold both sections, as in the
// original program; `usocks client` reads `client:`, `usocks server` reads
// `server:`. Unknown keys anywhere are an error that names the key.
type Config struct {
	Client *ClientConfig `yaml:"client"`
	Server *ServerConfig `yaml:"server"`
}

// BackendConfig is the `backend:` section: how client and server reach
// each other.
type BackendConfig struct {
	// Type is plain_tcp (the default). multi_tcp is v1 only.
	Type string `yaml:"type"`
	// Server is the host the client connects to (default 127.0.0.1). The
	// server ignores it, so one section can serve both sides.
	Server string `yaml:"server"`
	// Address is where the server listens (default: all addresses).
	Address string `yaml:"address"`
	// Port is the backend port on both sides (default 4194).
	Port int `yaml:"port"`
	// Servers (client) replaces Server and Port with several servers to
	// spread sessions over and fail over between (failover.go).
	Servers []BackendServer `yaml:"servers"`
	// Number and Blocksize are multi_tcp settings (v1; defaults 5, 8192).
	Number    int `yaml:"number"`
	Blocksize int `yaml:"blocksize"`
	// TLS backend (type: tls, v2 only). The server needs TLSCert and
	// TLSKey (PEM files) and may name a Decoy HTML file served to anything
	// that is not a usocks client; the client checks the certificate for
	// TLSServerName (default: server) against the system roots, or against
	// the PEM file TLSCA.
	TLSCert       string `yaml:"tls_cert"`
	TLSKey        string `yaml:"tls_key"`
	Decoy         string `yaml:"decoy"`
	TLSServerName string `yaml:"tls_server_name"`
	TLSCA         string `yaml:"tls_ca"`
	// TLSPin (client), instead of TLSCA and the name check, trusts the
	// server certificate whose public key has this SHA-256 (unpadded
	// base64url; runner/tls_pin.go): what a share link carries for a
	// self-signed certificate.
	TLSPin string `yaml:"tls_pin"`
	// Prefix (plain_tcp, v2) is sent before the client's first flight:
	// printable bytes that exempt it from fully-encrypted-traffic rules.
	// Both sides must agree. It is a constant, so it is a fingerprint of
	// its own: prefer the tls backend where possible.
	Prefix string `yaml:"prefix"`
	// WebSocket, fingerprint and fallback settings (config_detect.go).
	DetectConfig `yaml:",inline"`
}

// FrontendConfig is the server's `frontend:` section: where streams go.
type FrontendConfig struct {
	// Type is redirect (the default), socks5 or http (proxy frontends:
	// the app names its target through the tunnel).
	Type string `yaml:"type"`
	// Server and Port are the redirect target (defaults localhost:80).
	Server string `yaml:"server"`
	Port   int    `yaml:"port"`
	// DialTimeout bounds each connect to a target (default 10s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// Allow and Deny are the proxy frontends' access rules: CIDRs or IPs
	// with an optional port ("10.0.0.0/8:443", "[::1]/128:22"). Deny
	// wins; Allow overrides the default deny of loopback, private,
	// link-local, unspecified and multicast addresses.
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
	// Users, if set, requires a username and password (SOCKS5 RFC 1929,
	// HTTP Proxy-Authorization Basic): user name → password.
	Users map[string]string `yaml:"users"`
	// MaxDials caps concurrent target dials of the proxy frontends
	// (default 64); more wait for a free slot within dial_timeout.
	MaxDials int `yaml:"max_dials"`
	// UDP serves SOCKS5 UDP ASSOCIATE (socks5 only; default true).
	UDP *bool `yaml:"udp"`
	// UDPRefuse443 drops UDP to port 443, so browsers fall back from QUIC
	// to TCP (socks5 only; default false).
	UDPRefuse443 bool `yaml:"udp_refuse_443"`
}

// Common holds the settings both sides share.
type Common struct {
	Backend BackendConfig `yaml:"backend"`
	// Key is a base64 32-byte key from `usocks genkey`, or a passphrase of
	// at least 16 characters (stretched with Argon2id).
	Key string `yaml:"key"`
	// Protocol is v2 (default) or v1 (legacy, weak, opt-in).
	Protocol string `yaml:"protocol"`
	// Cipher is auto (default), chacha20-poly1305 or aes-256-gcm. On the
	// client it picks the data cipher; on the server, anything but auto
	// restricts clients to that cipher.
	Cipher string `yaml:"cipher"`
	// MaxStreams caps the streams of one tunnel (default 4096).
	MaxStreams int `yaml:"max_streams"`
	// ReplayWindow is the accepted clock skew (default 30s, 10s..120s).
	ReplayWindow time.Duration `yaml:"replay_window"`
	// IdleTimeout resets a stream with no data either way for this long
	// (default 1h; 0s is never — as the YAML value "0s" is the zero
	// value, use a negative value such as -1s to disable).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// HalfClosedTimeout resets a stream that one side finished and that
	// then carried no data for this long (default 2m; -1s disables).
	HalfClosedTimeout time.Duration `yaml:"half_closed_timeout"`
	// Defense is the traffic-analysis defence policy (v2): off, light,
	// standard or max. The client asks for it (default standard); the
	// server grants at most this (default max). See runner/defence.go.
	Defense string `yaml:"defense"`
	// DefenseTuning overrides the policy's parameters for what this side
	// sends (experts only).
	DefenseTuning *DefenseTuning `yaml:"defense_tuning"`
	// RekeyAfter is how many records a v2 sender seals under one key
	// before it rekeys in band (default 4194304; at least 1000). It rekeys
	// hourly in any case.
	RekeyAfter uint64 `yaml:"rekey_after"`
	// Metrics, if set, serves Prometheus metrics at http://ADDR:PORT/metrics
	// (runner/metrics.go). A non-loopback address is refused unless
	// MetricsAllowRemote is true.
	Metrics            string `yaml:"metrics"`
	MetricsAllowRemote bool   `yaml:"metrics_allow_remote"`
	// LogLevel, if set, is the log level (trace, debug, info, warn,
	// error); --log-level or -v on the command line win over it. A reload
	// applies a change.
	LogLevel string `yaml:"log_level"`
	// KeepAlive is the PING interval on v2 backends (default 15s; -1s
	// disables): a backend silent for 2.5 intervals is declared dead; the
	// client then reconnects, the server frees the session. Over lanes
	// (v2 multi_tcp) one lane silent for 1 interval is cut and replaced
	// (SPEC-v2.md §7d, lane liveness).
	KeepAlive time.Duration `yaml:"keepalive"`
	// Capture, if set, records the session's frames to this file.
	Capture string `yaml:"capture"`
	// CapturePlaintext also records decrypted frame payloads. Off by
	// default: a capture then holds no plaintext data and never a key.
	CapturePlaintext bool `yaml:"capture_plaintext"`
	// CaptureMaxMiB caps a capture file (default 1024 MiB); later events
	// are dropped and counted.
	CaptureMaxMiB int64 `yaml:"capture_max_mib"`
	// PostQuantum adds ML-KEM-768 to the v2 key exchange (client; default
	// true). A server always answers it.
	PostQuantum *bool `yaml:"post_quantum"`
	// Resumable sessions (config_resume.go).
	ResumeConfig `yaml:",inline"`
}

// ClientConfig is the `client:` section.
type ClientConfig struct {
	Common `yaml:",inline"`
	// Address and Port are where the client listens for apps
	// (defaults 127.0.0.1:8000, as the original).
	Address string `yaml:"address"`
	Port    int    `yaml:"port"`
	// UDP binds a UDP relay on the same address and port for SOCKS5 UDP
	// associations served by a socks5 frontend (v2; default true).
	UDP *bool `yaml:"udp"`
	// ServerKey is the server's identity key when the server has several
	// clients (server.clients): `key` is then this client's own key.
	ServerKey string `yaml:"server_key"`
	// Listen makes the client answer the apps' proxy requests itself
	// (client-side proxy mode): type socks5, http, or mixed (both on one
	// port). The target then rides in the stream's SYN (SPEC-v2.md §6e),
	// so a new connection costs no tunnel round trip; the server's
	// frontend must be socks5 or http. Default: none (the app's bytes go
	// to the server's frontend as they are).
	Listen ListenConfig `yaml:"listen"`
	// RotateAfter, if set, replaces the backend after about this long
	// (± 25 %): a resumable session resumes on a new connection, any
	// other opens a new session and lets the old one's streams finish
	// (default off; SPEC-v2.md §6b).
	RotateAfter time.Duration `yaml:"rotate_after"`
	// RotateBytes, if set, replaces the backend of a resumable session
	// after about this many bytes sent and received on it (± 25 %;
	// default off, at least 16 KiB).
	RotateBytes int64 `yaml:"rotate_bytes"`
	// SessionWait bounds how long an app connection waits for a session
	// while the backend (re)connects; then it is reset (default 5s). A
	// waiting app also cuts the reconnect backoff short.
	SessionWait time.Duration `yaml:"session_wait"`
}

// DefaultSessionWait is session_wait's default.
const DefaultSessionWait = 5 * time.Second

// ServerConfig is the `server:` section.
type ServerConfig struct {
	Common   `yaml:",inline"`
	Frontend FrontendConfig `yaml:"frontend"`
	// Clients, if set, makes this a multi-user server (v2): each client
	// name has its own key (base64 or passphrase), and `key` becomes the
	// server's identity key, which every client also needs (its
	// server_key). A reload (SIGHUP) adds and removes users; a removed
	// user's running sessions are ended (runner/reload.go).
	Clients map[string]string `yaml:"clients"`
	// SaltCache caps remembered handshake salts (default 1,000,000).
	SaltCache int `yaml:"salt_cache"`
	// Replay store, state file and shared users (replaystore.go).
	ScaleOutConfig `yaml:",inline"`
	// MaxPending caps connections not authenticated yet: in their
	// handshake or drained after a failed one (default 4096). When it is
	// reached, the oldest of them is ended early; a new connection is
	// never refused.
	MaxPending int `yaml:"max_pending"`
	// ProbeTimeout fixes how long invalid input is read and discarded
	// before the close. Default: 30s + a random part up to 60s, drawn once
	// at start. Tests set it short.
	ProbeTimeout time.Duration `yaml:"probe_timeout"`
	// DrainTimeout bounds a graceful stop (SIGTERM): running streams may
	// finish for this long, then the sessions close (runner/drain.go).
	// Unset: DefaultDrainTimeout; 0: close at once.
	DrainTimeout *time.Duration `yaml:"drain_timeout"`
	// Limits on authenticated peers (config_limits.go).
	Limits `yaml:",inline"`
}

// Defaults.
const (
	DefaultBackendPort = 4194
	DefaultClientPort  = 8000
	DefaultSaltCache   = 1_000_000
	DefaultMaxPending  = 4096
)

// validate fills defaults and records every problem of the shared keys.
func (c *Common) validate(p *problems, server bool) {
	switch c.Protocol {
	case "":
		c.Protocol = "v2"
	case "v1", "v2":
	default:
		p.bad("protocol", "%q: want v2 or v1", c.Protocol)
	}
	if c.Key == "" {
		p.bad("key", "missing: run `usocks genkey` and put its output here")
	}
	if c.Key == SampleKey {
		p.bad("key", "%s", sampleKeyRefused)
	}
	switch c.Backend.Type {
	case "":
		c.Backend.Type = "plain_tcp"
	case "plain_tcp":
	case "multi_tcp":
		if c.Protocol != "v1" && c.ResumeTimeout < 0 {
			p.bad("backend.type", "multi_tcp with protocol v2 needs resumable sessions (resume_timeout ≥ 0)")
		}
	case "tls":
		if c.Protocol != "v2" {
			p.bad("backend.type", "tls is only for protocol: v2")
		}
		if server && (c.Backend.TLSCert == "" || c.Backend.TLSKey == "") {
			k := "backend.tls_cert"
			if c.Backend.TLSCert != "" {
				k = "backend.tls_key"
			}
			p.bad(k, "missing: a tls backend needs a certificate and its key (PEM files)")
		}
	case "ws":
		if c.Protocol != "v2" {
			p.bad("backend.type", "ws is only for protocol: v2")
		}
	default:
		p.bad("backend.type", "%q: want plain_tcp, multi_tcp, tls or ws", c.Backend.Type)
	}
	c.Backend.validateDetect(p, server)
	if c.Backend.Prefix != "" && (c.Protocol != "v2" || c.Backend.Type != "plain_tcp") {
		p.bad("backend.prefix", "only for protocol v2 with backend type plain_tcp")
	}
	if len(c.Backend.Prefix) > 256 {
		p.bad("backend.prefix", "at most 256 bytes")
	}
	if c.Backend.Port == 0 {
		c.Backend.Port = DefaultBackendPort
	}
	checkPort(p, "backend.port", c.Backend.Port)
	if c.Backend.Server == "" {
		c.Backend.Server = "127.0.0.1"
	}
	if c.Backend.Number == 0 {
		c.Backend.Number = 5
		if c.Protocol == "v2" {
			c.Backend.Number = 4
		}
	}
	if c.Protocol == "v2" && c.Backend.Number > wire.MaxLanes {
		p.bad("backend.number", "must be 1..%d with protocol v2", wire.MaxLanes)
	}
	if c.Backend.Blocksize == 0 {
		c.Backend.Blocksize = 8192
	}
	if c.Backend.Number < 1 || c.Backend.Number > 64 {
		p.bad("backend.number", "must be 1..64")
	}
	if c.Backend.Blocksize < 16 || c.Backend.Blocksize > 1<<20 {
		p.bad("backend.blocksize", "must be 16..1048576")
	}
	if c.Protocol == "v2" {
		if _, err := wire.ParseCipher(c.Cipher); err != nil {
			p.bad("cipher", "%s", err)
		}
	} else if c.Cipher != "" {
		p.bad("cipher", "v1 has one fixed cipher (AES-128-CBC); remove this key")
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = stages.DefaultMaxStreams
	}
	if c.MaxStreams < 1 || c.MaxStreams > 65534 {
		p.bad("max_streams", "must be 1..65534")
	}
	c.validateDefence(p, server)
	if c.RekeyAfter == 0 {
		c.RekeyAfter = stages.DefaultRekeyAfter
	}
	if c.RekeyAfter < 1000 || c.RekeyAfter > 1<<23 {
		p.bad("rekey_after", "must be 1000..8388608 records")
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = time.Hour
	}
	if c.HalfClosedTimeout == 0 {
		c.HalfClosedTimeout = 2 * time.Minute
	}
	checkMetricsAddr(p, c.Metrics, c.MetricsAllowRemote)
	if c.LogLevel != "" {
		if _, err := logrus.ParseLevel(c.LogLevel); err != nil {
			p.bad("log_level", "%q: want trace, debug, info, warn or error", c.LogLevel)
		}
	}
	if c.ReplayWindow == 0 {
		c.ReplayWindow = stages.DefaultSkew
	}
	if c.ReplayWindow < 10*time.Second || c.ReplayWindow > 120*time.Second {
		p.bad("replay_window", "must be 10s..120s")
	}
	c.ResumeConfig.validate(p)
}

// PSK parses the v2 key (this may take a moment for a passphrase).
func (c *Common) PSK(section string) (*wire.PSK, error) {
	k, err := wire.ParseKey(c.Key)
	if err != nil {
		return nil, &ConfigError{section + ".key", err.Error()}
	}
	return &k, nil
}

func checkPort(p *problems, key string, port int) {
	if port < 1 || port > 65535 {
		p.bad(key, "%d: must be 1..65535", port)
	}
}

// Validate fills defaults and checks the client section. The error is a
// *ConfigError, or ConfigErrors when there are several problems.
func (c *ClientConfig) Validate() error {
	p := &problems{section: "client"}
	c.validateServers(p) // before the defaults of backend.server and port
	c.Common.validate(p, false)
	if c.Address == "" {
		c.Address = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = DefaultClientPort
	}
	if c.Backend.TLSPin != "" {
		switch {
		case c.Backend.Type != "tls":
			p.bad("backend.tls_pin", "only for backend type tls")
		case c.Backend.TLSCA != "":
			p.bad("backend.tls_pin", "give tls_pin or tls_ca, not both (a pin replaces the CA check)")
		}
		if err := checkPin(c.Backend.TLSPin); err != nil {
			p.bad("backend.tls_pin", "%s", err)
		}
	}
	if c.ServerKey != "" && c.Protocol != "v2" {
		p.bad("server_key", "only for protocol v2")
	}
	if c.RotateAfter < 0 || (c.RotateAfter > 0 && c.RotateAfter < 100*time.Millisecond) {
		p.bad("rotate_after", "must be 0 (off) or at least 100ms")
	}
	if c.RotateBytes < 0 || (c.RotateBytes > 0 && c.RotateBytes < MinRotateBytes) {
		p.bad("rotate_bytes", "must be 0 (off) or at least 16384")
	}
	if c.SessionWait == 0 {
		c.SessionWait = DefaultSessionWait
	}
	if c.SessionWait < 100*time.Millisecond || c.SessionWait > 10*time.Minute {
		p.bad("session_wait", "must be 100ms .. 10m")
	}
	switch c.Listen.Type {
	case "":
	case "socks5", "http", "mixed":
		if c.Protocol != "v2" {
			p.bad("listen.type", "only for protocol v2")
		}
	default:
		p.bad("listen.type", "%q: want socks5, http or mixed", c.Listen.Type)
	}
	checkPort(p, "port", c.Port)
	return p.err()
}

// ListenConfig is the client's `listen:` section (client-side proxy).
type ListenConfig struct {
	// Type is socks5, http or mixed; empty: no client-side proxy.
	Type string `yaml:"type"`
	// HandshakeTimeout bounds the app's proxy request (default 30s).
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
}

// Validate fills defaults and checks the server section. The error is a
// *ConfigError, or ConfigErrors when there are several problems.
func (s *ServerConfig) Validate() error {
	p := &problems{section: "server"}
	s.Common.validate(p, true)
	switch s.Frontend.Type {
	case "", "redirect":
		s.Frontend.Type = "redirect"
		if k := proxyOnlyKey(&s.Frontend); k != "" {
			p.bad("frontend."+k, "only for type socks5 or http (a redirect target is set by the operator)")
		}
	case "socks5", "http":
		if err := validateProxyFrontend(&s.Frontend); err != nil {
			var ce *ConfigError
			if errors.As(err, &ce) {
				p.list = append(p.list, ce)
			} else {
				p.bad("frontend", "%s", err)
			}
		}
	default:
		p.bad("frontend.type", "%q: want redirect, socks5 or http", s.Frontend.Type)
	}
	if s.Frontend.Server == "" {
		s.Frontend.Server = "localhost"
	}
	if s.Frontend.Port == 0 {
		s.Frontend.Port = 80
	}
	checkPort(p, "frontend.port", s.Frontend.Port)
	if s.Frontend.DialTimeout == 0 {
		s.Frontend.DialTimeout = frontend.DefaultDialTimeout
	}
	for name, k := range s.Clients {
		if k == SampleKey {
			p.bad("clients."+name, "%s", sampleKeyRefused)
		}
	}
	if len(s.Clients) > 0 && s.Protocol != "v2" {
		p.bad("clients", "only for protocol v2")
	}
	if s.SaltCache == 0 {
		s.SaltCache = DefaultSaltCache
	}
	if s.SaltCache < 1000 {
		p.bad("salt_cache", "must be at least 1000")
	}
	if s.MaxPending == 0 {
		s.MaxPending = DefaultMaxPending
	}
	if s.MaxPending < 1 {
		p.bad("max_pending", "must be at least 1")
	}
	if s.ProbeTimeout < 0 || s.ProbeTimeout > 10*time.Minute {
		p.bad("probe_timeout", "must be 0 (random) .. 10m")
	}
	if s.DrainTimeout == nil {
		d := DefaultDrainTimeout
		s.DrainTimeout = &d
	}
	if *s.DrainTimeout < 0 || *s.DrainTimeout > time.Hour {
		p.bad("drain_timeout", "must be 0 (close at once) .. 1h")
	}
	s.validateScaleOut(p)
	s.Limits.validate(p)
	return p.err()
}
