package runner

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Certificate pins (backend.tls_pin, and the tls_pin of share links): a
// client that knows the SHA-256 of the server certificate's public key
// (its SubjectPublicKeyInfo, as HPKP and RFC 7469 pin it) trusts that key
// and nothing else, so a self-signed certificate works without a CA file
// and a link carries all a client needs. The pin replaces the chain and
// name checks; a new key (not a renewal that keeps it) needs a new pin.

// PinLen is the length of a pin in unpadded base64url.
var PinLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// CertPin is the pin of a certificate: the SHA-256 of its
// SubjectPublicKeyInfo in unpadded base64url.
func CertPin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// checkPin accepts a pin as links and configs carry it.
func checkPin(pin string) error {
	b, err := base64.RawURLEncoding.DecodeString(pin)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("want the SHA-256 of the certificate's public key in unpadded base64url (%d characters)", PinLen)
	}
	return nil
}

// PinError is a server certificate whose key is not the pinned one. It
// is permanent: retrying meets the same certificate.
type PinError struct{ Got string }

func (e *PinError) Error() string {
	return "the server's certificate key does not match backend.tls_pin (it has pin " + e.Got + ")"
}

// verifyPin returns the check of a pinned connection: the leaf the
// server sent must carry the pinned key.
func verifyPin(pin string) func(raw [][]byte, _ [][]*x509.Certificate) error {
	want, _ := base64.RawURLEncoding.DecodeString(pin)
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the server sent no certificate")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("server certificate: %w", err)
		}
		sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		if subtle.ConstantTimeCompare(sum[:], want) != 1 {
			return &PinError{Got: CertPin(leaf)}
		}
		return nil
	}
}

// linkPin is the pin a share link made from a server section carries:
// that of its certificate when the certificate does not verify against
// this machine's system roots for name (self-signed, or a private CA),
// else "" (a public certificate needs no pin, and a pin would break at a
// renewal with a new key).
func linkPin(b *BackendConfig, name string) (string, error) {
	certs, err := readCerts(b.TLSCert)
	if err != nil {
		return "", &ConfigError{"server.backend.tls_cert", err.Error()}
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Intermediates: inter}); err == nil {
		return "", nil
	}
	return CertPin(certs[0]), nil
}

// pin is the pin of the certificate in force.
func (cs *certSource) pin() string {
	c := cs.p.Load()
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return ""
		}
	}
	return CertPin(leaf)
}

// readCerts reads the certificates of a PEM file, leaf first.
func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in the file")
	}
	return certs, nil
}
