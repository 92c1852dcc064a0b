package wire

import (
	"crypto/rand"
	"testing"
)

func TestIdentityHint(t *testing.T) {
	var identity, user, other PSK
	var salt [SaltSize]byte
	for _, b := range [][]byte{identity[:], user[:], other[:], salt[:]} {
		_, _ = rand.Read(b)
	}
	eih := SealIdentityHint(&identity, &salt, &user)
	if got := OpenIdentityHint(&identity, &salt, &eih); got != UserIDOf(&user) {
		t.Fatal("the hint does not name its user")
	}
	if got := OpenIdentityHint(&other, &salt, &eih); got == UserIDOf(&user) {
		t.Fatal("a wrong identity key recovered the user")
	}
	var salt2 [SaltSize]byte
	_, _ = rand.Read(salt2[:])
	if eih2 := SealIdentityHint(&identity, &salt2, &user); eih2 == eih {
		t.Fatal("the hint must change with the salt (no constant user tag on the wire)")
	}
}
