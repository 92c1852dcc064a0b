package wire

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// KeySize is the size of the pre-shared key and of every derived key.
const KeySize = 32

// MinPassphraseLen is the fewest characters a passphrase may have.
const MinPassphraseLen = 16

// Argon2id parameters for passphrases. They are part of the protocol: both
// ends must stretch a passphrase the same way.
const (
	PassphraseSalt    = "usocks v2 passphrase"
	PassphraseTime    = 3
	PassphraseMemory  = 64 * 1024 // KiB, so 64 MiB
	PassphraseThreads = 4
)

// Labels used as HKDF info strings. See SPEC-v2.md, "Key schedule".
const (
	labelC2S     = "usocks v2 c2s"
	labelS2C     = "usocks v2 s2c"
	labelDataC2S = "usocks v2 data c2s"
	labelDataS2C = "usocks v2 data s2c"
	labelRekey   = "usocks v2 rekey"
)

// PSK is the 32-byte pre-shared key of protocol v2.
type PSK [KeySize]byte

// Errors returned by ParseKey. The config loader wraps them with the key name.
var (
	ErrKeyLength       = errors.New("a base64 key must decode to 32 bytes")
	ErrShortPassphrase = fmt.Errorf("a passphrase needs at least %d characters (or use a key from `usocks genkey`)", MinPassphraseLen)
)

// ParseKey reads the configured key. Surrounding white space is ignored.
// A string that is base64 (standard or URL alphabet, padded or not) of
// exactly 32 bytes is the key itself. A string that looks like a key but is
// not one — it ends in '=' or is 43 or 44 base64 characters — and decodes
// to another length is rejected as a mistyped key. Anything else is a
// passphrase: it must have at least MinPassphraseLen characters and is
// stretched with Argon2id (DerivePassphrase).
func ParseKey(s string) (PSK, error) { return parseKey(s, DerivePassphrase) }

// parseKey is ParseKey with the passphrase stretch passed in (the fuzz
// target passes a cheap one: Argon2id costs 64 MiB per call).
func parseKey(s string, stretch func(string) PSK) (PSK, error) {
	var k PSK
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(b) == KeySize {
			copy(k[:], b)
			return k, nil
		}
		if strings.HasSuffix(s, "=") || len(s) == 43 || len(s) == 44 {
			return k, fmt.Errorf("%w, got %d", ErrKeyLength, len(b))
		}
	}
	if utf8.RuneCountInString(s) < MinPassphraseLen {
		return k, ErrShortPassphrase
	}
	return stretch(s), nil
}

// LooksLikeDamagedKey says whether s, if ParseKey takes it as a
// passphrase, looks like a base64 key with a typo: 38–50 characters, all
// from a base64 alphabet. Such a string becomes a passphrase silently;
// callers warn about it.
func LooksLikeDamagedKey(s string) bool {
	s = strings.TrimSpace(s)
	if len(s) < 38 || len(s) > 50 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z', r >= '0' && r <= '9', strings.ContainsRune("+/-_=", r):
		default:
			return false
		}
	}
	return !isBase64Key(s)
}

// isBase64Key says whether s decodes as a 32-byte base64 key.
func isBase64Key(s string) bool {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KeySize {
			return true
		}
	}
	return false
}

// DerivePassphrase stretches a passphrase into a PSK with Argon2id and the
// fixed parameters above. It takes about 64 MiB and a fraction of a second.
func DerivePassphrase(p string) PSK {
	var k PSK
	copy(k[:], argon2.IDKey([]byte(p), []byte(PassphraseSalt), PassphraseTime, PassphraseMemory, PassphraseThreads, KeySize))
	return k
}

// GenerateKey draws a new PSK from r and returns it in base64, the form the
// config file takes.
func GenerateKey(r io.Reader) (string, error) {
	var k PSK
	if _, err := io.ReadFull(r, k[:]); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(k[:]), nil
}

// derive is HKDF-SHA256 with a 32-byte output.
func derive(secret, salt []byte, info string) [KeySize]byte {
	var out [KeySize]byte
	b, err := hkdf.Key(sha256.New, secret, salt, info, KeySize)
	if err != nil {
		// Only possible for absurd output lengths; KeySize is fixed.
		panic(err)
	}
	copy(out[:], b)
	return out
}

// ClientHandshakeKey is k_c2s of the handshake: HKDF(PSK, salt_c, "usocks v2 c2s").
// It seals the client's first flight.
func ClientHandshakeKey(psk *PSK, saltC *[SaltSize]byte) [KeySize]byte {
	return derive(psk[:], saltC[:], labelC2S)
}

// ServerHandshakeKey is k_s2c of the handshake:
// HKDF(PSK, salt_c || salt_s, "usocks v2 s2c"). It seals the server's reply and
// binds it to the client's salt.
func ServerHandshakeKey(psk *PSK, saltC, saltS *[SaltSize]byte) [KeySize]byte {
	salt := make([]byte, 0, 2*SaltSize)
	salt = append(append(salt, saltC[:]...), saltS[:]...)
	return derive(psk[:], salt, labelS2C)
}

// SessionKeys are the forward-secret data keys of one backend connection.
type SessionKeys struct {
	C2S, S2C [KeySize]byte
}

// DeriveSessionKeys mixes the X25519 shared secret with both handshake keys:
//
//	k = HKDF(secret = X25519(e_c, E_s), salt = hk_c2s || hk_s2c,
//	         info = label || E_c || E_s)
//
// so that knowing the PSK alone never yields the data keys.
func DeriveSessionKeys(shared []byte, hkC2S, hkS2C *[KeySize]byte, pubC, pubS *[PublicKeySize]byte) SessionKeys {
	salt := make([]byte, 0, 2*KeySize)
	salt = append(append(salt, hkC2S[:]...), hkS2C[:]...)
	info := func(label string) string {
		b := make([]byte, 0, len(label)+2*PublicKeySize)
		b = append(append(append(b, label...), pubC[:]...), pubS[:]...)
		return string(b)
	}
	return SessionKeys{
		C2S: derive(shared, salt, info(labelDataC2S)),
		S2C: derive(shared, salt, info(labelDataS2C)),
	}
}

// RekeyKey is the next key of a direction after a KEYUPDATE frame carrying
// salt: HKDF(secret = k, salt = salt, info = "usocks v2 rekey").
func RekeyKey(k *[KeySize]byte, salt []byte) [KeySize]byte {
	return derive(k[:], salt, labelRekey)
}
