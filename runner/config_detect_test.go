package runner

import (
	"strings"
	"testing"
)

// validateYAML parses a config and validates the sections it has.
func validateYAML(y string) error {
	c, err := ParseConfig([]byte(y))
	if err == nil && c.Client != nil {
		err = c.Client.Validate()
	}
	if err == nil && c.Server != nil {
		err = c.Server.Validate()
	}
	return err
}

func TestDetectConfig(t *testing.T) {
	const key = "key: 3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w3q2+4=\n"
	srv := func(b string) string { return "server:\n  " + key + "  backend: " + b + "\n" }
	cli := func(b string) string { return "client:\n  " + key + "  backend: " + b + "\n" }
	const tlsSrv = "type: tls, tls_cert: c.pem, tls_key: k.pem"
	cases := []struct{ name, yaml, want string }{
		{"ws", cli("{type: ws, path: /ws}"), ""},
		{"ws server", srv("{type: ws, path: /ws}"), ""},
		{"wss", cli("{type: tls, path: /ws, host: cdn.example.org}"), ""},
		{"firefox", cli("{type: tls, fingerprint: firefox}"), ""},
		{"fallback", srv("{" + tlsSrv + ", fallback: '127.0.0.1:8080', fallback_alpn: [h2, http/1.1]}"), ""},
		{"ws needs a path", cli("{type: ws}"), "client.backend.path: missing"},
		{"path starts with /", cli("{type: ws, path: ws}"), "client.backend.path"},
		{"ws needs v2", "client:\n  key: k\n  protocol: v1\n  backend: {type: ws, path: /x}\n", "client.backend.type"},
		{"path on plain_tcp", cli("{path: /x}"), "client.backend.path: only for"},
		{"host needs a path", cli("{type: tls, host: x}"), "client.backend.host"},
		{"fingerprint", cli("{type: tls, fingerprint: opera}"), "client.backend.fingerprint"},
		{"fingerprint on ws", cli("{type: ws, path: /x, fingerprint: firefox}"), "client.backend.fingerprint"},
		{"fallback on the client", cli("{type: tls, fallback: '127.0.0.1:80'}"), "client.backend.fallback"},
		{"fallback address", srv("{" + tlsSrv + ", fallback: localhost}"), "server.backend.fallback"},
		{"fallback_alpn without fallback", srv("{" + tlsSrv + ", fallback_alpn: [h2]}"), "server.backend.fallback_alpn"},
		{"fallback_alpn value", srv("{" + tlsSrv + ", fallback: '127.0.0.1:80', fallback_alpn: [h3]}"), "server.backend.fallback_alpn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validateYAML(tc.yaml)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}
