package runner

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzLoadConfig feeds arbitrary YAML to the config loader and validation.
// Whatever the bytes, loading and validating never panic, validation
// problems are one line each and name a key of their section, a
// config that validates keeps its invariants, and validating it again
// changes nothing.
//
//	go test ./runner/ -run '^$' -fuzz '^FuzzLoadConfig$' -fuzztime 10s
func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{originalSample, "", "client: [\n", "client:\n  backend:\n    type: 0", "server:\n  key: k\n  frontend: {type: socks5}\n",
		"client: &a\n  key: k\n  backend: *a\n", "server:\n  key: 3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+4=\n  clients: {alice: x}\n  backend: {type: tls, tls_cert: c, tls_key: k}\n"} {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile("../testdata/config/sample.yaml"); err == nil {
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "usocks.yaml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			// YAML syntax errors quote the offending value as it is, line
			// breaks included; only the prefix is promised. Anything
			// else names its keys.
			if !strings.HasPrefix(err.Error(), "config: ") {
				configProblems(t, "", err)
			}
			return
		}
		// A second load of the same bytes is the reference for idempotence.
		ref, err := LoadConfig(path)
		if err != nil {
			t.Fatalf("second load failed: %v", err)
		}
		if c.Client != nil {
			checkValidate(t, "client", c.Client.Validate, func() error { return ref.Client.Validate() }, c.Client, ref.Client, &c.Client.Common)
		}
		if c.Server != nil {
			checkValidate(t, "server", c.Server.Validate, func() error { return ref.Server.Validate() }, c.Server, ref.Server, &c.Server.Common)
		}
	})
}

// checkValidate runs a section's Validate on got twice and on ref once.
func checkValidate(t *testing.T, section string, validate, validateRef func() error, got, ref any, common *Common) {
	t.Helper()
	err := validate()
	if err != nil {
		configProblems(t, section+".", err)
		return
	}
	if common.Protocol != "v1" && common.Protocol != "v2" {
		t.Fatalf("%s: protocol %q validated", section, common.Protocol)
	}
	if common.Key == "" || common.Backend.Port < 1 || common.Backend.Port > 65535 || common.MaxStreams < 1 || common.MaxStreams > 65534 {
		t.Fatalf("%s: validated config out of range: %+v", section, *common)
	}
	if err := validateRef(); err != nil {
		t.Fatalf("%s: same bytes validated once and failed once: %v", section, err)
	}
	if err := validate(); err != nil {
		t.Fatalf("%s: validating a valid config again: %v", section, err)
	}
	if !reflect.DeepEqual(got, ref) {
		t.Fatalf("%s: validating twice changed the config:\n%+v\n%+v", section, got, ref)
	}
}

// configProblems checks a config error: one *ConfigError or a list of
// them, each on one line and naming a key under prefix.
func configProblems(t *testing.T, prefix string, err error) {
	t.Helper()
	var list ConfigErrors
	var one *ConfigError
	switch {
	case errors.As(err, &list):
	case errors.As(err, &one):
		list = ConfigErrors{one}
	default:
		t.Fatalf("error %v (%T) names no key", err, err)
	}
	if len(list) == 0 || len(strings.Split(err.Error(), "\n")) != len(list) {
		t.Fatalf("%d problems in %d lines: %q", len(list), len(strings.Split(err.Error(), "\n")), err)
	}
	for _, e := range list {
		if !strings.HasPrefix(e.Key, prefix) || strings.Contains(e.Error(), "\n") {
			t.Fatalf("problem %q: want one line about a key under %q", e.Error(), prefix)
		}
	}
}
