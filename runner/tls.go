package runner

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	utls "github.com/refraction-networking/utls"

	"usocks/stages/frontend"
)

// TLS backend settings built from the config (stages/backend_tls.go has the
// backend itself).

// certSource holds the server's certificate; a reload replaces it (a
// renewed certificate in the same files, or other files): new TLS
// connections get the new one.
type certSource struct {
	p atomic.Pointer[tls.Certificate]
}

// loadCert reads the certificate and key files.
func loadCert(b *BackendConfig) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(b.TLSCert, b.TLSKey)
	if err != nil {
		return nil, &ConfigError{"server.backend.tls_cert", fmt.Sprintf("cannot load the certificate and key: %v", err)}
	}
	return &cert, nil
}

// serverTLS loads the server's certificate. ALPN offers what the web
// site behind the server serves: the fallback's protocols, or http/1.1
// for the built-in decoy.
func serverTLS(b *BackendConfig) (*tls.Config, *certSource, error) {
	cert, err := loadCert(b)
	if err != nil {
		return nil, nil, err
	}
	cs := new(certSource)
	cs.p.Store(cert)
	alpn := []string{"http/1.1"}
	if b.Fallback != "" && len(b.FallbackALPN) > 0 {
		alpn = b.FallbackALPN
	}
	return &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cs.p.Load(), nil },
		MinVersion:     tls.VersionTLS12,
		NextProtos:     alpn,
	}, cs, nil
}

// webSite is what answers visitors: the fallback web server, or the
// built-in decoy serving the decoy file (or the default page).
func webSite(b *BackendConfig) (interface{ Serve(net.Conn, []byte) }, error) {
	if b.Fallback != "" {
		return &frontend.Fallback{Addr: b.Fallback, Timeout: 10 * time.Second}, nil
	}
	d := &frontend.Decoy{Page: []byte(frontend.DefaultDecoyPage), Modified: time.Now()}
	if b.Decoy != "" {
		fi, err := os.Stat(b.Decoy)
		if err == nil {
			d.Modified = fi.ModTime()
			d.Page, err = os.ReadFile(b.Decoy)
		}
		if err != nil {
			return nil, &ConfigError{"server.backend.decoy", err.Error()}
		}
	}
	return d, nil
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
	if b.TLSPin != "" {
		// The pin is the check: no chain to a root, no name (the name is
		// still sent, as SNI).
		cfg.InsecureSkipVerify = true
		cfg.VerifyPeerCertificate = verifyPin(b.TLSPin)
		return cfg, nil
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
