package wire

import (
	"crypto/aes"
	"crypto/sha256"
)

// Multi-user servers (SPEC-v2.md §3c). A server that serves several users
// has its own identity PSK; each user has a PSK of their own. The client
// puts an encrypted identity hint (EIH, after SIP022) between its salt and
// its sealed fixed header:
//
//	salt_c (32) | EIH (16) | AEAD_hk_c2s(fixed) | AEAD_hk_c2s(var)
//	EIH = AES-256-ECB(HKDF(identity PSK, salt_c, "usocks v2 identity"),
//	                  SHA-256(user PSK)[:16])
//
// and seals the rest under its user PSK. The server decrypts the EIH with
// its identity PSK, looks the hash up among its users and tries that one
// key only: a handshake never costs more than one key trial, so there is
// no partitioning oracle (AES-GCM and ChaCha20-Poly1305 are not
// key-committing). No user name or id travels in the clear.

// IdentityHintSize is the size of the EIH.
const IdentityHintSize = 16

const labelIdentity = "usocks v2 identity"

// UserID is what the EIH carries: the first 16 bytes of SHA-256 of the
// user's PSK. Servers index their users by it.
type UserID [IdentityHintSize]byte

// UserIDOf computes a user's id from their PSK.
func UserIDOf(user *PSK) UserID {
	var id UserID
	sum := sha256.Sum256(user[:])
	copy(id[:], sum[:IdentityHintSize])
	return id
}

func identityCipher(identity *PSK, salt *[SaltSize]byte) [KeySize]byte {
	return derive(identity[:], salt[:], labelIdentity)
}

// SealIdentityHint is the EIH of user for a flight with salt.
func SealIdentityHint(identity *PSK, salt *[SaltSize]byte, user *PSK) [IdentityHintSize]byte {
	k := identityCipher(identity, salt)
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err) // fixed key size
	}
	id := UserIDOf(user)
	var out [IdentityHintSize]byte
	b.Encrypt(out[:], id[:])
	return out
}

// OpenIdentityHint recovers the user id from an EIH. A wrong identity PSK
// or a forged hint gives an id that matches no user. Every 16 bytes are a
// hint (AES is a permutation): there is nothing to reject before the lookup.
func OpenIdentityHint(identity *PSK, salt *[SaltSize]byte, eih *[IdentityHintSize]byte) UserID {
	k := identityCipher(identity, salt)
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err)
	}
	var id UserID
	b.Decrypt(id[:], eih[:])
	return id
}
