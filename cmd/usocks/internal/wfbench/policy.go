package wfbench

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"usocks/runner"
)

// A Policy is a named set of config keys applied to both tunnel ends (or
// to one, with a client. or server. prefix).
type Policy struct {
	Name string
	Spec string // key:value;key:value
	// Direct is no tunnel at all: the loader's connections go through
	// the recorder straight to the target (the reference "no tunnel").
	Direct bool
}

// Builtin policies: the defence levels of the defense key, and named
// variants of the older knobs.
var builtinPolicies = map[string]string{
	"off":          "defense:off",
	"light":        "defense:light",
	"standard":     "defense:standard",
	"max":          "defense:max",
	"padding-off":  "padding:off;chaff:false",
	"default":      "",
	"padding-high": "padding:high;idle_chaff:100ms",
	"direct":       "",
}

// HasDefenseKey reports whether this build's config has the defense key.
func HasDefenseKey() bool {
	_, err := runner.ParseConfig([]byte("client:\n  defense: off\n"))
	return err == nil
}

// DefaultPolicies is the policy list when none is given: the defence
// levels if the config has them, else the older knobs' variants.
func DefaultPolicies() string {
	if HasDefenseKey() {
		return "off,light,standard,max"
	}
	return "padding-off,default,padding-high"
}

// PolicyNames lists the built-in policies.
func PolicyNames() []string {
	var n []string
	for k := range builtinPolicies {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// ParsePolicies reads a comma-separated list of built-in policy names or
// NAME=key:value;key:value definitions (keys of a config's client and
// server sections; prefix one with client. or server. for one side).
func ParsePolicies(s string) ([]Policy, error) {
	var out []Policy
	seen := map[string]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, spec, custom := strings.Cut(item, "=")
		if !custom {
			var ok bool
			if spec, ok = builtinPolicies[name]; !ok {
				return nil, fmt.Errorf("unknown policy %q (built in: %s; or NAME=key:value;...)", name, strings.Join(PolicyNames(), ", "))
			}
		}
		if seen[name] {
			return nil, fmt.Errorf("policy %q twice", name)
		}
		seen[name] = true
		p := Policy{Name: name, Spec: spec, Direct: name == "direct" && !custom}
		if _, _, err := p.Configs("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1, 2, 3); err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("no policy")
	}
	return out, nil
}

// Configs builds the tunnel's client and server config for this policy:
// the client listens on clientPort and reaches the server's backend at
// backendPort (the recorder); the server redirects to targetPort.
func (p Policy) Configs(key string, clientPort, backendPort, targetPort int) (*runner.ClientConfig, *runner.ServerConfig, error) {
	var cli, srv strings.Builder
	fmt.Fprintf(&cli, "client:\n  key: %q\n  address: 127.0.0.1\n  port: %d\n  udp: false\n  backend: {server: 127.0.0.1, port: %d}\n", key, clientPort, backendPort)
	fmt.Fprintf(&srv, "server:\n  key: %q\n  backend: {address: 127.0.0.1, port: %d}\n  frontend: {type: redirect, server: 127.0.0.1, port: %d}\n  probe_timeout: 300ms\n", key, backendPort, targetPort)
	for kv := range strings.SplitSeq(p.Spec, ";") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return nil, nil, fmt.Errorf("%q: want key:value", kv)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		line := fmt.Sprintf("  %s: %s\n", k, yamlScalar(v))
		switch {
		case strings.HasPrefix(k, "client."):
			cli.WriteString(strings.Replace(line, "client.", "", 1))
		case strings.HasPrefix(k, "server."):
			srv.WriteString(strings.Replace(line, "server.", "", 1))
		default:
			cli.WriteString(line)
			srv.WriteString(line)
		}
	}
	cfg, err := runner.ParseConfig([]byte(cli.String() + srv.String()))
	if err != nil {
		return nil, nil, err
	}
	if err := cfg.Client.Validate(); err != nil {
		return nil, nil, err
	}
	if err := cfg.Server.Validate(); err != nil {
		return nil, nil, err
	}
	return cfg.Client, cfg.Server, nil
}

// yamlScalar quotes v unless it is a number, a boolean or a duration.
func yamlScalar(v string) string {
	if v == "true" || v == "false" {
		return v
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return v
	}
	if _, err := time.ParseDuration(v); err == nil {
		return v
	}
	return strconv.Quote(v)
}
