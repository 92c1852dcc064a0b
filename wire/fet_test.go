package wire

import (
	"crypto/rand"
	"testing"
)

func TestFETExemptionRules(t *testing.T) {
	random := make([]byte, 1000)
	_, _ = rand.Read(random)
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"zeros (few set bits)", make([]byte, 100), "Ex1"},
		{"printable start", append([]byte("abcdef"), random[:200]...), "Ex2"},
		{"mostly printable", append(append([]byte{0x80}, []byte("0123456789012345678")...), append([]byte{0x81}, []byte("abcdefghijklmnopqrs")...)...), "Ex3"},
		{"tls record", append([]byte{0x16, 0x03, 0x01, 0x02, 0x00}, random[:300]...), "Ex5"},
	}
	for _, c := range cases {
		if got := FETExemption(c.in); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// The raw backend's first flight looks random: the detector's rules would
// not exempt it (which is why the tls backend and the prefix exist).
func TestFirstFlightIsNotExempt(t *testing.T) {
	var psk PSK
	_, _ = rand.Read(psk[:])
	exempt := 0
	for i := 0; i < 500; i++ {
		h := ClientHello{Time: 1, Cipher: CipherAES256GCM, PadLen: i % 1300}
		_, _ = rand.Read(h.Salt[:])
		if FETExemption(AppendClientHello(nil, &psk, &h)) != "" {
			exempt++
		}
	}
	// Only chance (six printable first bytes: about 0.3 %) exempts one.
	if exempt > 10 {
		t.Fatalf("%d of 500 raw first flights exempt", exempt)
	}
	h := ClientHello{Time: 1, Cipher: CipherAES256GCM, PadLen: 200}
	_, _ = rand.Read(h.Salt[:])
	withPrefix := AppendClientHello([]byte("HTTP/1.1 "), &psk, &h)
	if got := FETExemption(withPrefix); got != "Ex2" {
		t.Fatalf("prefixed flight: %q, want Ex2", got)
	}
}
