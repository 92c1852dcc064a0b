package runner

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"usocks/wire"
)

// Share links (docs/share-link.md): everything a client needs in one URI,
//
//	usocks://KEY@HOST:PORT/?type=tls&tls_server_name=example.org#name
//
// KEY is the 32-byte v2 key in unpadded base64url (a passphrase is carried
// as the key it stretches to). Every query parameter is the client config
// key of the same name; a parameter at its default is left out. A parser
// refuses parameters it does not know: a link may carry settings that
// matter for security, and a client must not silently drop one.

// LinkScheme is the URI scheme of share links.
const LinkScheme = "usocks"

// linkParam is one query parameter: its config key, how to read it from
// a client config (empty: the default, left out) and how to set it.
type linkParam struct {
	name string
	get  func(c *ClientConfig) string
	set  func(c *ClientConfig, v string) error
}

func strParam(name string, field func(c *ClientConfig) *string) linkParam {
	return linkParam{name,
		func(c *ClientConfig) string { return *field(c) },
		func(c *ClientConfig, v string) error { *field(c) = v; return nil }}
}

func durParam(name string, field func(c *ClientConfig) *time.Duration) linkParam {
	return linkParam{name,
		func(c *ClientConfig) string {
			if *field(c) == 0 {
				return ""
			}
			return field(c).String()
		},
		func(c *ClientConfig, v string) error {
			d, err := time.ParseDuration(v)
			*field(c) = d
			return err
		}}
}

// linkParams are the parameters in the order links carry them.
var linkParams = []linkParam{
	strParam("protocol", func(c *ClientConfig) *string { return &c.Protocol }),
	strParam("type", func(c *ClientConfig) *string { return &c.Backend.Type }),
	strParam("cipher", func(c *ClientConfig) *string { return &c.Cipher }),
	strParam("tls_server_name", func(c *ClientConfig) *string { return &c.Backend.TLSServerName }),
	{"tls_pin",
		func(c *ClientConfig) string { return c.Backend.TLSPin },
		func(c *ClientConfig, v string) error { c.Backend.TLSPin = v; return checkPin(v) }},
	strParam("path", func(c *ClientConfig) *string { return &c.Backend.Path }),
	strParam("host", func(c *ClientConfig) *string { return &c.Backend.Host }),
	strParam("fingerprint", func(c *ClientConfig) *string { return &c.Backend.Fingerprint }),
	strParam("prefix", func(c *ClientConfig) *string { return &c.Backend.Prefix }),
	{"server_key",
		func(c *ClientConfig) string { return linkKey(c.ServerKey) },
		func(c *ClientConfig, v string) error { c.ServerKey = v; return checkLinkKey(v) }},
	strParam("defense", func(c *ClientConfig) *string { return &c.Defense }),
	durParam("keepalive", func(c *ClientConfig) *time.Duration { return &c.KeepAlive }),
}

// defaults a link leaves out.
var linkDefaults = map[string]string{"protocol": "v2", "type": "plain_tcp", "cipher": "auto", "defense": "standard", "keepalive": "15s"}

// linkKey is a v2 key as a link carries it ("" stays "").
func linkKey(k string) string {
	if k == "" {
		return ""
	}
	psk, err := wire.ParseKey(k)
	if err != nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(psk[:])
}

// checkLinkKey accepts only what links carry: 32 bytes in unpadded
// base64url (never a passphrase, so parsing a link is cheap).
func checkLinkKey(k string) error {
	b, err := base64.RawURLEncoding.DecodeString(k)
	if err != nil || len(b) != wire.KeySize {
		return fmt.Errorf("want %d bytes in unpadded base64url (%d characters)", wire.KeySize, base64.RawURLEncoding.EncodedLen(wire.KeySize))
	}
	return nil
}

// Link makes the share link of a validated v2 client config; name, if
// set, is the label after '#'.
func Link(c *ClientConfig, name string) (string, error) {
	if c.Protocol != "v2" {
		return "", errors.New("links are for protocol v2 (a v1 peer needs a config file)")
	}
	if len(c.Backend.Servers) > 0 {
		return "", errors.New("a link names one server: make one link per entry of backend.servers")
	}
	psk, err := c.PSK("client")
	if err != nil {
		return "", err
	}
	q := make([]string, 0, len(linkParams))
	for _, p := range linkParams {
		v := p.get(c)
		if v == "" || linkDefaults[p.name] == v {
			continue
		}
		q = append(q, p.name+"="+url.QueryEscape(v))
	}
	u := url.URL{Scheme: LinkScheme, User: url.User(base64.RawURLEncoding.EncodeToString(psk[:])),
		Host: net.JoinHostPort(c.Backend.Server, strconv.Itoa(c.Backend.Port)), Path: "/",
		RawQuery: strings.Join(q, "&"), Fragment: name}
	return u.String(), nil
}

// ParseLink reads a share link into a client config (not yet validated:
// NewClient validates it, and listen address and port are the caller's)
// and the link's name.
func ParseLink(s string) (*ClientConfig, string, error) {
	bad := func(format string, args ...any) (*ClientConfig, string, error) {
		return nil, "", fmt.Errorf("link: "+format, args...)
	}
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return bad("%v", errors.Unwrap(err))
	}
	if u.Scheme != LinkScheme {
		return bad("want a %s:// link, got %q", LinkScheme, u.Scheme)
	}
	if u.Opaque != "" || u.User == nil || u.User.Username() == "" {
		return bad("no key: want %s://KEY@HOST:PORT/?…", LinkScheme)
	}
	if _, set := u.User.Password(); set {
		return bad("the key has a ':' in it; a link key is base64url")
	}
	if u.Path != "" && u.Path != "/" {
		return bad("unexpected path %q", u.Path)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" || port == "" {
		return bad("want HOST:PORT after the key")
	}
	c := &ClientConfig{}
	c.Key = u.User.Username()
	if err := checkLinkKey(c.Key); err != nil {
		return bad("key: %v", err)
	}
	c.Backend.Server = host
	if c.Backend.Port, err = strconv.Atoi(port); err != nil || c.Backend.Port < 1 || c.Backend.Port > 65535 {
		return bad("port %q: want 1..65535", port)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("%v", err)
	}
	known := map[string]bool{}
	for _, p := range linkParams {
		known[p.name] = true
		vs := q[p.name]
		if len(vs) == 0 {
			continue
		}
		if len(vs) > 1 {
			return bad("%s given %d times", p.name, len(vs))
		}
		if err := p.set(c, vs[0]); err != nil {
			return bad("%s=%q: %v", p.name, vs[0], err)
		}
	}
	for k := range q {
		if !known[k] {
			return bad("unknown parameter %q (a newer usocks made this link? upgrade)", k)
		}
	}
	return c, u.Fragment, nil
}

// ServerLink makes the link a client of this server needs. host is the
// address clients reach the server at (required when the server listens
// on all addresses); user picks a client of a multi-user server.
func ServerLink(s *ServerConfig, host, user, name string) (string, error) {
	c := &ClientConfig{Common: s.Common}
	c.Backend.TLSCert, c.Backend.TLSKey, c.Backend.Decoy, c.Backend.Address = "", "", "", ""
	c.Backend.Fallback, c.Backend.FallbackALPN = "", nil
	c.Capture, c.CapturePlaintext, c.DefenseTuning = "", false, nil
	if c.Defense == "max" {
		// The server's defense is what it grants at most; its default,
		// max, leaves the choice to the client (default standard).
		c.Defense = ""
	}
	if host == "" {
		host = s.Backend.Address
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return "", errors.New("the server listens on all addresses: give --host, the name or address clients reach it at")
		}
	}
	c.Backend.Server = host
	if c.Backend.Type == "tls" && c.Backend.TLSServerName == "" && net.ParseIP(host) == nil {
		c.Backend.TLSServerName = host
	}
	if c.Backend.Type == "tls" {
		name := c.Backend.TLSServerName
		if name == "" {
			name = host
		}
		pin, err := linkPin(&s.Backend, name)
		if err != nil {
			return "", err
		}
		c.Backend.TLSPin = pin
	}
	switch {
	case len(s.Clients) > 0 && user == "":
		return "", errors.New("a multi-user server: give --user NAME (one of server.clients)")
	case len(s.Clients) > 0:
		k, ok := s.Clients[user]
		if !ok {
			return "", fmt.Errorf("--user %q: not in server.clients", user)
		}
		c.Key, c.ServerKey = k, s.Key
	case user != "":
		return "", errors.New("--user: this server has no clients: section")
	}
	if name == "" {
		name = user
	}
	return Link(c, name)
}
