package runner

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	utls "github.com/refraction-networking/utls"

	"usocks/stages/frontend"
)

// TLS backend settings built from the config (stages/backend_tls.go has the
// backend itself).

// serverTLS loads the server's certificate and decoy page.
func serverTLS(b *BackendConfig) (*tls.Config, []byte, error) {
	cert, err := tls.LoadX509KeyPair(b.TLSCert, b.TLSKey)
	if err != nil {
		return nil, nil, &ConfigError{"server.backend.tls_cert", fmt.Sprintf("cannot load the certificate and key: %v", err)}
	}
	page := []byte(frontend.DefaultDecoyPage)
	if b.Decoy != "" {
		if page, err = os.ReadFile(b.Decoy); err != nil {
			return nil, nil, &ConfigError{"server.backend.decoy", err.Error()}
		}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}, page, nil
}

// clientTLS is the client's TLS configuration: the server's certificate is
// always verified, against the system roots or the configured CA file. The
// ClientHello is a browser's (stages.DialBrowserTLS), so its versions,
// ALPN and groups come from the browser, not from here.
func clientTLS(b *BackendConfig) (*utls.Config, error) {
	cfg := &utls.Config{ServerName: b.Server}
	if b.TLSServerName != "" {
		cfg.ServerName = b.TLSServerName
	}
	if b.TLSCA != "" {
		pem, err := os.ReadFile(b.TLSCA)
		if err != nil {
			return nil, &ConfigError{"client.backend.tls_ca", err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{"client.backend.tls_ca", "no PEM certificate in the file"}
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
