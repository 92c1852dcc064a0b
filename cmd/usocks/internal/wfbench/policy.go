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

// Builtin policies: the levels of the defense key, the defaults, and no
// tunnel at all.
var builtinPolicies = map[string]string{
	"off":      "defense:off",
	"light":    "defense:light",
	"standard": "defense:standard",
	"max":      "defense:max",
	"default":  "",
	"direct":   "",
}

// DefaultPolicies is the policy list when none is given.
func DefaultPolicies() string {
	return "off,light,standard,max"
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
// NAME=key:value;key:value definitions: keys of a config's client and
// server sections, dotted for nested ones (defense_tuning.front:40);
// prefix one with client. or server. for one side.
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
	cli := yamlNode{
		"key": strconv.Quote(key), "address": "127.0.0.1", "port": strconv.Itoa(clientPort), "udp": "false",
		"backend": yamlNode{"server": "127.0.0.1", "port": strconv.Itoa(backendPort)},
	}
	srv := yamlNode{
		"key": strconv.Quote(key), "probe_timeout": "300ms",
		"backend":  yamlNode{"address": "127.0.0.1", "port": strconv.Itoa(backendPort)},
		"frontend": yamlNode{"type": "redirect", "server": "127.0.0.1", "port": strconv.Itoa(targetPort)},
	}
	for kv := range strings.SplitSeq(p.Spec, ";") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return nil, nil, fmt.Errorf("%q: want key:value", kv)
		}
		path := strings.Split(strings.TrimSpace(k), ".")
		v = yamlScalar(strings.TrimSpace(v))
		var err error
		switch path[0] {
		case "client":
			err = cli.set(path[1:], v)
		case "server":
			err = srv.set(path[1:], v)
		default:
			if err = cli.set(path, v); err == nil {
				err = srv.set(path, v)
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%q: %w", kv, err)
		}
	}
	var b strings.Builder
	yamlNode{"client": cli, "server": srv}.write(&b, "")
	cfg, err := runner.ParseConfig([]byte(b.String()))
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

// yamlNode is a YAML mapping under construction: values are scalars as
// YAML text, or yamlNodes.
type yamlNode map[string]any

func (n yamlNode) set(path []string, v string) error {
	if len(path) == 0 || path[0] == "" {
		return errors.New("empty key")
	}
	if len(path) == 1 {
		if _, ok := n[path[0]].(yamlNode); ok {
			return fmt.Errorf("%s is a section", path[0])
		}
		n[path[0]] = v
		return nil
	}
	sub, ok := n[path[0]].(yamlNode)
	if !ok {
		if _, scalar := n[path[0]]; scalar {
			return fmt.Errorf("%s is not a section", path[0])
		}
		sub = yamlNode{}
		n[path[0]] = sub
	}
	return sub.set(path[1:], v)
}

func (n yamlNode) write(b *strings.Builder, indent string) {
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := n[k].(type) {
		case yamlNode:
			fmt.Fprintf(b, "%s%s:\n", indent, k)
			v.write(b, indent+"  ")
		case string:
			fmt.Fprintf(b, "%s%s: %s\n", indent, k, v)
		}
	}
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
