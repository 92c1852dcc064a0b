package runner

import (
	"net"
	"strings"
)

// DetectConfig holds the backend settings against detection: the
// WebSocket path, the browser a TLS client parrots and the web server
// behind a TLS server. It is inlined into BackendConfig (same YAML level).
type DetectConfig struct {
	// Path is the WebSocket path (type ws; with type tls it makes the
	// backend wss). Both sides must agree. It starts with "/".
	Path string `yaml:"path"`
	// Host is the Host header of the client's WebSocket upgrade (default:
	// tls_server_name, then server): the name a reverse proxy or CDN
	// routes by.
	Host string `yaml:"host"`
	// Fingerprint is the browser whose TLS ClientHello the client sends:
	// chrome (the default, also when empty) or firefox.
	Fingerprint string `yaml:"fingerprint"`
	// Fallback is a real HTTP server (host:port) that gets every TLS
	// visitor that is not a usocks client, after TLS termination; without
	// it the built-in decoy answers.
	Fallback string `yaml:"fallback"`
	// FallbackALPN is what the TLS server offers in ALPN: the protocols
	// the fallback serves on its one port (default [http/1.1]; add h2 only
	// if it speaks cleartext HTTP/2 too). Without a fallback: http/1.1.
	FallbackALPN []string `yaml:"fallback_alpn"`
}

// Fingerprints a client can parrot.
var fingerprints = []string{"chrome", "firefox"}

// validateDetect records the problems of the detection settings.
func (b *BackendConfig) validateDetect(p *problems, server bool) {
	d := &b.DetectConfig
	if b.Type != "tls" && b.Type != "ws" {
		for _, k := range []struct {
			name string
			set  bool
		}{{"path", d.Path != ""}, {"host", d.Host != ""}, {"fingerprint", d.Fingerprint != ""},
			{"fallback", d.Fallback != ""}, {"fallback_alpn", len(d.FallbackALPN) > 0}} {
			if k.set {
				p.bad("backend."+k.name, "only for backend types tls and ws")
			}
		}
		return
	}
	switch {
	case d.Path != "" && !strings.HasPrefix(d.Path, "/"):
		p.bad("backend.path", "%q: must start with /", d.Path)
	case d.Path == "" && b.Type == "ws":
		p.bad("backend.path", "missing: a ws backend needs the WebSocket path (e.g. /ws)")
	}
	if d.Host != "" && d.Path == "" {
		p.bad("backend.host", "only with a WebSocket path")
	}
	switch d.Fingerprint {
	case "": // chrome
	case "chrome", "firefox":
		if b.Type != "tls" {
			p.bad("backend.fingerprint", "only for backend type tls")
		}
	default:
		p.bad("backend.fingerprint", "%q: want %s", d.Fingerprint, strings.Join(fingerprints, " or "))
	}
	if d.Fallback != "" {
		if !server || b.Type != "tls" {
			p.bad("backend.fallback", "only on a server with backend type tls")
		} else if _, _, err := net.SplitHostPort(d.Fallback); err != nil {
			p.bad("backend.fallback", "%q: want host:port", d.Fallback)
		}
	}
	if len(d.FallbackALPN) > 0 && d.Fallback == "" {
		p.bad("backend.fallback_alpn", "only with a fallback")
	}
	for _, a := range d.FallbackALPN {
		if a != "h2" && a != "http/1.1" {
			p.bad("backend.fallback_alpn", "%q: want h2 or http/1.1", a)
		}
	}
}
