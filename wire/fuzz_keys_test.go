package wire

import (
	"bytes"
	"crypto/aes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// Fuzz targets of the key inputs: the configured key string and the
// identity hint of a multi-user first flight.
//
//	go test ./wire/ -run '^$' -fuzz '^FuzzParseKey$' -fuzztime 10s

// cheapStretch stands in for Argon2id (64 MiB a call) and remembers what
// it was asked to stretch.
type cheapStretch struct{ got []string }

func (c *cheapStretch) stretch(p string) PSK {
	c.got = append(c.got, p)
	return PSK(sha256.Sum256([]byte("stretched " + p)))
}

func FuzzParseKey(f *testing.F) {
	key := bytes.Repeat([]byte{0xa5}, KeySize)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		f.Add(enc.EncodeToString(key))
		f.Add(" \t" + enc.EncodeToString(key[:31]) + "\n")
		f.Add(enc.EncodeToString(append(key, 1)))
	}
	for _, s := range []string{"", "=", "correct horse battery staple", "sixteen chars ok", "fifteen chars!!", "ключ-ключ-ключ-ключ", "AAAA====", strings.Repeat("A", 43), strings.Repeat("A", 44) + "="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var cs cheapStretch
		k, err := parseKey(s, cs.stretch)
		trimmed := strings.TrimSpace(s)
		switch {
		case err != nil:
			if len(cs.got) != 0 {
				t.Fatalf("stretched a passphrase and failed: %v", err)
			}
			if errors.Is(err, ErrShortPassphrase) {
				if utf8.RuneCountInString(trimmed) >= MinPassphraseLen {
					t.Fatalf("%q refused as short", s)
				}
			} else if !errors.Is(err, ErrKeyLength) {
				t.Fatalf("error outside the key sentinels: %v", err)
			}
		case len(cs.got) == 1:
			// A passphrase: long enough, stretched as written, trimmed.
			if cs.got[0] != trimmed || utf8.RuneCountInString(trimmed) < MinPassphraseLen {
				t.Fatalf("stretched %q for input %q", cs.got[0], s)
			}
			if k != PSK(sha256.Sum256([]byte("stretched "+trimmed))) {
				t.Fatal("the key is not the stretched passphrase")
			}
		case len(cs.got) == 0:
			// A key: some base64 alphabet decodes the input to exactly it.
			decoded := false
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				if b, err := enc.DecodeString(trimmed); err == nil && bytes.Equal(b, k[:]) {
					decoded = true
				}
			}
			if !decoded {
				t.Fatalf("%q parsed as key %x, which it does not encode", s, k)
			}
		default:
			t.Fatalf("stretched %d times", len(cs.got))
		}
		// White space around the key never matters.
		var cs2 cheapStretch
		k2, err2 := parseKey("\t "+s+" \r\n", cs2.stretch)
		if k2 != k || (err == nil) != (err2 == nil) {
			t.Fatalf("surrounding white space changed the result: %x %v vs %x %v", k, err, k2, err2)
		}
		// Whatever key came out, its printed form (usocks genkey) reads back.
		var cs3 cheapStretch
		if k3, err := parseKey(base64.StdEncoding.EncodeToString(k[:]), cs3.stretch); err != nil || k3 != k || len(cs3.got) != 0 {
			t.Fatalf("the base64 form of %x parses as %x, %v (stretched %d)", k, k3, err, len(cs3.got))
		}
	})
}

// fuzzKey makes a PSK of any bytes (repeated or cut to 32).
func fuzzKey(b []byte) PSK {
	var k PSK
	for i := range k {
		if len(b) > 0 {
			k[i] = b[i%len(b)]
		}
	}
	return k
}

func FuzzIdentityHint(f *testing.F) {
	f.Add([]byte("identity"), []byte("salt"), []byte("user"), []byte("0123456789abcdef"))
	f.Add([]byte{}, []byte{}, []byte{}, make([]byte, IdentityHintSize))
	f.Add(bytes.Repeat([]byte{0xff}, 40), []byte{1}, []byte{2}, bytes.Repeat([]byte{0xff}, IdentityHintSize))
	f.Fuzz(func(t *testing.T, identityB, saltB, userB, hintB []byte) {
		identity, user := fuzzKey(identityB), fuzzKey(userB)
		var salt [SaltSize]byte
		copy(salt[:], saltB)
		var hint [IdentityHintSize]byte
		copy(hint[:], hintB)

		// The hint a client seals names its user at the server.
		eih := SealIdentityHint(&identity, &salt, &user)
		if got := OpenIdentityHint(&identity, &salt, &eih); got != UserIDOf(&user) {
			t.Fatalf("hint %x opens as %x, want %x", eih, got, UserIDOf(&user))
		}
		// Under another identity key or another salt it names someone else.
		other := identity
		other[0] ^= 1
		if OpenIdentityHint(&other, &salt, &eih) == UserIDOf(&user) {
			t.Fatal("a wrong identity key recovered the user")
		}
		salt2 := salt
		salt2[SaltSize-1] ^= 0x80
		if SealIdentityHint(&identity, &salt2, &user) == eih {
			t.Fatal("the hint did not change with the salt")
		}
		// Any 16 bytes open to an id, and to a different one for different
		// bytes: a forged hint costs a lookup, never a key trial for the
		// user it does not name.
		id := OpenIdentityHint(&identity, &salt, &hint)
		k := identityCipher(&identity, &salt)
		b, err := aes.NewCipher(k[:])
		if err != nil {
			t.Fatal(err)
		}
		var back [IdentityHintSize]byte
		b.Encrypt(back[:], id[:])
		if back != hint {
			t.Fatalf("hint %x opens to %x, which seals to %x", hint, id, back)
		}
		hint2 := hint
		hint2[IdentityHintSize/2] ^= 1
		if OpenIdentityHint(&identity, &salt, &hint2) == id {
			t.Fatal("two hints open to one id")
		}
	})
}
