package wire

import (
	"crypto/mlkem"
	"crypto/sha256"
)

// Post-quantum hybrid key exchange (SPEC-v2.md §2a). Beside X25519, a client
// may send an ML-KEM-768 encapsulation key in a handshake extension; the
// server then answers with a ciphertext in its own, and the data keys mix
// both shared secrets with the handshake keys (which come from the PSK):
//
//	th    = SHA-256(ek || ct)
//	k_c2s = HKDF(secret = ss_x25519 || ss_mlkem, salt = hk_c2s || hk_s2c,
//	             info = "usocks v2 hybrid data c2s" || E_c || E_s || th)
//	k_s2c = the same with "usocks v2 hybrid data s2c"
//
// A recorded session therefore stays sealed unless both X25519 and
// ML-KEM-768 are broken (or the ephemeral keys leak): the PSK alone, or the
// PSK and a quantum computer against X25519, do not open its records.

// ML-KEM-768 sizes on the wire.
const (
	KEMEncapsulationKeySize = mlkem.EncapsulationKeySize768 // client extension value
	KEMCiphertextSize       = mlkem.CiphertextSize768       // server extension value
)

// Labels of the hybrid data keys.
const (
	labelHybridC2S = "usocks v2 hybrid data c2s"
	labelHybridS2C = "usocks v2 hybrid data s2c"
)

// KEMExt is the client's extension carrying its encapsulation key.
func KEMExt(ek *mlkem.EncapsulationKey768) Extension {
	return Extension{Type: ExtKEM, Value: ek.Bytes()}
}

// DeriveHybridSessionKeys is the data key schedule of a hybrid handshake:
// sharedX is the X25519 shared secret, sharedPQ the ML-KEM-768 one, ek and
// ct the encapsulation key and ciphertext as sent.
func DeriveHybridSessionKeys(sharedX, sharedPQ []byte, hkC2S, hkS2C *[KeySize]byte, pubC, pubS *[PublicKeySize]byte, ek, ct []byte) SessionKeys {
	secret := make([]byte, 0, len(sharedX)+len(sharedPQ))
	secret = append(append(secret, sharedX...), sharedPQ...)
	salt := make([]byte, 0, 2*KeySize)
	salt = append(append(salt, hkC2S[:]...), hkS2C[:]...)
	h := sha256.New()
	h.Write(ek)
	h.Write(ct)
	th := h.Sum(nil)
	info := func(label string) string {
		b := make([]byte, 0, len(label)+2*PublicKeySize+len(th))
		b = append(append(append(append(b, label...), pubC[:]...), pubS[:]...), th...)
		return string(b)
	}
	return SessionKeys{
		C2S: derive(secret, salt, info(labelHybridC2S)),
		S2C: derive(secret, salt, info(labelHybridS2C)),
	}
}
