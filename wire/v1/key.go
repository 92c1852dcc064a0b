package v1

import "crypto/md5"

// KeySize is the size in bytes of the AES-128 key used by protocol v1.
const KeySize = 16

// DeriveKey turns the pre-shared key string from the configuration into
// the AES-128 key: the MD5 digest of the string's UTF-8 bytes (spec §2).
// There is no salt and no work factor; the same key is used in both
// directions and by every session that shares the passphrase.
//
// For example DeriveKey("preshared_key") is
// c17409a79ffb0e8662493d1f3d8292d9.
func DeriveKey(key string) [KeySize]byte {
	return md5.Sum([]byte(key))
}
