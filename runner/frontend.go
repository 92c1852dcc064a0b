package runner

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/stages/frontend"
)

// Frontend construction: the server's `frontend:` section becomes one
// stages.Frontend shared by all sessions (so a proxy frontend's dial cap
// is per server, not per session).

// MaxDialsLimit bounds server.frontend.max_dials.
const MaxDialsLimit = 65535

// newFrontend builds the frontend of a validated server config.
func newFrontend(cfg *ServerConfig, log *logrus.Entry) (stages.Frontend, error) {
	fc := &cfg.Frontend
	switch fc.Type {
	case "", "redirect":
		return &frontend.Redirect{Addr: cfg.TargetAddr(), Timeout: fc.DialTimeout}, nil
	case "socks5", "http":
	default:
		return nil, &ConfigError{"server.frontend.type", fmt.Sprintf("%q: want redirect, socks5 or http", fc.Type)}
	}
	acl, err := proxyACL(fc)
	if err != nil {
		return nil, err
	}
	d := frontend.NewDialer(acl, fc.DialTimeout, fc.MaxDials)
	users := fc.Users
	if len(users) == 0 {
		users = nil
	}
	flog := log.WithField("layer", "frontend")
	if fc.Type == "socks5" {
		udp := fc.UDP == nil || *fc.UDP
		return &frontend.Socks5{Dialer: d, Users: users, Log: flog, UDP: udp, RefuseUDP443: fc.UDPRefuse443}, nil
	}
	return &frontend.HTTPProxy{Dialer: d, Users: users, Log: flog}, nil
}

// proxyACL parses the access rules; errors name the key and index.
func proxyACL(fc *FrontendConfig) (*frontend.ACL, error) {
	allow, err := frontend.ParseRules(fc.Allow)
	if err != nil {
		return nil, ruleConfigError("allow", err)
	}
	deny, err := frontend.ParseRules(fc.Deny)
	if err != nil {
		return nil, ruleConfigError("deny", err)
	}
	return &frontend.ACL{Allow: allow, Deny: deny}, nil
}

func ruleConfigError(list string, err error) error {
	var re *frontend.RuleError
	if errors.As(err, &re) {
		return &ConfigError{fmt.Sprintf("server.frontend.%s[%d]", list, re.Index), re.Err.Error()}
	}
	return &ConfigError{"server.frontend." + list, err.Error()}
}

// proxyOnlyKey names the first proxy-only key set in a redirect section.
func proxyOnlyKey(fc *FrontendConfig) string {
	switch {
	case fc.Allow != nil:
		return "allow"
	case fc.Deny != nil:
		return "deny"
	case fc.Users != nil:
		return "users"
	case fc.MaxDials != 0:
		return "max_dials"
	case fc.UDP != nil:
		return "udp"
	case fc.UDPRefuse443:
		return "udp_refuse_443"
	}
	return ""
}

// validateProxyFrontend checks and fills the socks5/http settings. It is
// idempotent (Validate may run more than once on one config).
func validateProxyFrontend(fc *FrontendConfig) error {
	if _, err := proxyACL(fc); err != nil {
		return err
	}
	if fc.Users != nil && len(fc.Users) == 0 {
		return &ConfigError{"server.frontend.users", "empty: add `name: password` entries, or remove the key to allow any client"}
	}
	names := make([]string, 0, len(fc.Users))
	for u := range fc.Users {
		names = append(names, u)
	}
	sort.Strings(names)
	for _, u := range names {
		key := fmt.Sprintf("server.frontend.users[%q]", u)
		switch {
		case len(u) < 1 || len(u) > 255:
			return &ConfigError{key, "user name must be 1..255 bytes"}
		case strings.ContainsAny(u, ":\x00\r\n"):
			return &ConfigError{key, "user name must not contain ':' or control characters"}
		case len(fc.Users[u]) < 1 || len(fc.Users[u]) > 255:
			return &ConfigError{key, "password must be 1..255 bytes (the SOCKS5 limit)"}
		}
	}
	if fc.MaxDials == 0 {
		fc.MaxDials = frontend.DefaultMaxDials
	}
	if fc.MaxDials < 1 || fc.MaxDials > MaxDialsLimit {
		return &ConfigError{"server.frontend.max_dials", fmt.Sprintf("%d: must be 1..%d", fc.MaxDials, MaxDialsLimit)}
	}
	if fc.DialTimeout < 0 || fc.DialTimeout > 10*time.Minute {
		return &ConfigError{"server.frontend.dial_timeout", "must be 0 (default 10s) .. 10m"}
	}
	return nil
}
