package runner

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const linkTestKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // bytes 0..31

// A link carries every client setting it names: config → link → config
// gives the same client.
func TestLinkRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		cfg  ClientConfig
		want string // the link, exactly
	}{
		{"defaults", ClientConfig{Common: Common{Key: linkTestKey, Backend: BackendConfig{Server: "203.0.113.5", Port: 4194}}},
			"usocks://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@203.0.113.5:4194/"},
		{"tls and options", ClientConfig{Common: Common{Key: linkTestKey, Cipher: "chacha20-poly1305", Defense: "max", KeepAlive: 5 * time.Second,
			Backend: BackendConfig{Type: "tls", Server: "vpn.example.org", Port: 443, TLSServerName: "cdn.example.org", DetectConfig: DetectConfig{Fingerprint: "firefox"}}}},
			"usocks://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@vpn.example.org:443/?type=tls&cipher=chacha20-poly1305&tls_server_name=cdn.example.org&fingerprint=firefox&defense=max&keepalive=5s"},
		{"tls with a pin", ClientConfig{Common: Common{Key: linkTestKey,
			Backend: BackendConfig{Type: "tls", Server: "203.0.113.5", Port: 443, TLSPin: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}}},
			"usocks://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@203.0.113.5:443/?type=tls&tls_pin=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"},
		{"ws behind a proxy, ipv6", ClientConfig{Common: Common{Key: linkTestKey,
			Backend: BackendConfig{Type: "ws", Server: "2001:db8::1", Port: 8080, DetectConfig: DetectConfig{Path: "/a b/?x&y", Host: "front.example"}}}},
			"usocks://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@[2001:db8::1]:8080/?type=ws&path=%2Fa+b%2F%3Fx%26y&host=front.example"},
		{"multi-user, prefix, name", ClientConfig{Common: Common{Key: "a passphrase of some length", KeepAlive: time.Minute,
			Backend: BackendConfig{Server: "h.example", Port: 1, Prefix: "GET / HTTP/1.1\r\n"}}, ServerKey: linkTestKey},
			""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.cfg
			if err := in.Validate(); err != nil {
				t.Fatal(err)
			}
			link, err := Link(&in, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" && strings.TrimSuffix(link, "#"+strings.ReplaceAll(tc.name, " ", "%20")) != tc.want {
				t.Fatalf("link\n%s\nwant\n%s", link, tc.want)
			}
			out, name, err := ParseLink(link)
			if err != nil {
				t.Fatal(err)
			}
			if name != tc.name {
				t.Fatalf("name %q", name)
			}
			if err := out.Validate(); err != nil {
				t.Fatal(err)
			}
			// The key comes back in another spelling of the same bytes.
			pin, _ := in.PSK("client")
			pout, _ := out.PSK("client")
			if *pin != *pout {
				t.Fatal("key changed")
			}
			if in.ServerKey != "" {
				a, _ := (&Common{Key: in.ServerKey}).PSK("server_key")
				b, err := (&Common{Key: out.ServerKey}).PSK("server_key")
				if err != nil || *a != *b {
					t.Fatal("server key changed")
				}
			}
			in.Key, out.Key, in.ServerKey, out.ServerKey = "", "", "", ""
			if !reflect.DeepEqual(in, *out) {
				t.Fatalf("round trip:\n%+v\n%+v", in, *out)
			}
		})
	}
}

func TestParseLinkRefusesBadLinks(t *testing.T) {
	const k = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
	cases := []struct{ name, link, want string }{
		{"scheme", "ss://" + k + "@h:1/", "want a usocks:// link"},
		{"no key", "usocks://h:1/", "no key"},
		{"password", "usocks://" + k + ":x@h:1/", "':'"},
		{"short key", "usocks://abc@h:1/", "key:"},
		{"no port", "usocks://" + k + "@h/", "HOST:PORT"},
		{"port range", "usocks://" + k + "@h:70000/", "port"},
		{"path", "usocks://" + k + "@h:1/x", "unexpected path"},
		{"unknown parameter", "usocks://" + k + "@h:1/?defense=max&future=1", "unknown parameter"},
		{"twice", "usocks://" + k + "@h:1/?type=tls&type=ws", "type given 2 times"},
		{"bad duration", "usocks://" + k + "@h:1/?keepalive=10", "keepalive"},
		{"opaque", "usocks:" + k, "no key"},
		{"short pin", "usocks://" + k + "@h:1/?type=tls&tls_pin=abc", "tls_pin"},
		{"padded pin", "usocks://" + k + "@h:1/?type=tls&tls_pin=" + k + "%3D", "tls_pin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseLink(tc.link)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "link: ") {
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
		})
	}
}

func TestServerLink(t *testing.T) {
	cert, key := selfSigned(t)
	certs, err := readCerts(cert)
	if err != nil {
		t.Fatal(err)
	}
	pin := CertPin(certs[0])
	base := func() *ServerConfig {
		s := &ServerConfig{Common: Common{Key: linkTestKey, Backend: BackendConfig{Type: "tls", TLSCert: cert, TLSKey: key, Port: 443}}}
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if _, err := ServerLink(base(), "", "", ""); err == nil || !strings.Contains(err.Error(), "--host") {
		t.Fatalf("all addresses without --host: %v", err)
	}
	link, err := ServerLink(base(), "vpn.example.org", "", "")
	// A self-signed certificate: the link pins it.
	if err != nil || link != "usocks://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@vpn.example.org:443/?type=tls&tls_server_name=vpn.example.org&tls_pin="+pin {
		t.Fatalf("%s %v", link, err)
	}
	s := base()
	s.Clients = map[string]string{"alice": "alice's passphrase, long enough"}
	if _, err := ServerLink(s, "vpn.example.org", "", ""); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Fatalf("multi-user without --user: %v", err)
	}
	if _, err := ServerLink(s, "vpn.example.org", "bob", ""); err == nil || !strings.Contains(err.Error(), "bob") {
		t.Fatalf("unknown user: %v", err)
	}
	link, err = ServerLink(s, "vpn.example.org", "alice", "")
	if err != nil {
		t.Fatal(err)
	}
	c, name, err := ParseLink(link)
	if err != nil || name != "alice" || c.ServerKey == "" {
		t.Fatalf("%s: %+v %q %v", link, c, name, err)
	}
	if strings.Contains(link, cert) || strings.Contains(link, key) {
		t.Fatalf("server files in the link: %s", link)
	}
}

// FuzzParseLink: the link parser never panics, and whatever it accepts
// makes a link that parses to the same config.
func FuzzParseLink(f *testing.F) {
	f.Add("usocks://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@vpn.example.org:443/?type=tls&tls_server_name=cdn.example.org#x")
	f.Add("usocks://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@vpn.example.org:443/?type=tls&tls_pin=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
	f.Add("usocks://AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8@[::1]:1/?path=%2Fws&defense=light&keepalive=1s")
	f.Add("usocks://a@b:c/?=&&#")
	f.Fuzz(func(t *testing.T, s string) {
		c, name, err := ParseLink(s)
		if err != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		again, err := Link(c, name)
		if err != nil {
			t.Fatalf("accepted %q but cannot link it: %v", s, err)
		}
		c2, name2, err := ParseLink(again)
		if err != nil || name2 != name {
			t.Fatalf("%q → %q: %v", s, again, err)
		}
		if err := c2.Validate(); err != nil {
			t.Fatalf("%q → %q: %v", s, again, err)
		}
		if c2.ServerAddr() != c.ServerAddr() || !reflect.DeepEqual(c2.Backend, c.Backend) || c2.Defense != c.Defense {
			t.Fatalf("%q → %q: config changed", s, again)
		}
	})
}
