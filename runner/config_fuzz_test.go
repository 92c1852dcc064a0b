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
// errors are one line and name a key of the section they come from, a
// config that validates keeps its invariants, and validating it again
// changes nothing.
//
//	go test ./runner/ -run '^$' -fuzz '^FuzzLoadConfig$' -fuzztime 10s
func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{originalSample, "", "client: [\n", "server:\n  key: k\n  frontend: {type: socks5}\n",
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
			// YAML errors quote the offending value as it is, line
			// breaks included; only the prefix is promised.
			if !strings.HasPrefix(err.Error(), "config: ") {
				var ce *ConfigError
				if !errors.As(err, &ce) {
					t.Fatalf("load error %q neither a YAML error nor a ConfigError", err)
				}
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
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.HasPrefix(ce.Key, section+".") {
			t.Fatalf("%s: error %v (%T) does not name a %s key", section, err, err, section)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("error spans lines: %q", err)
		}
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
