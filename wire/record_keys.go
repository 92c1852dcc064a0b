package wire

import (
	"crypto/cipher"
	"errors"
	"fmt"
)

// Key custody. A data key is made into a Sealer or an Opener here and
// never leaves: NewSealerKey and NewOpenerKey take the key, keep the only
// copy beside the AEAD (they zero the caller's), and the in-band rekey of
// SPEC-v2.md §4a happens inside — SealKeyUpdate on the sending side,
// Rekey on the receiving side — each deriving the next key from the
// current one (RekeyKey) and overwriting the old. Forget zeroes the key at
// the end of a session. (The AEAD's own expanded key schedule cannot be
// zeroed from here; it becomes unreachable with the Sealer or Opener.)

// ErrNoKey is a rekey of a Sealer or Opener that was made from an AEAD
// (NewSealer, NewOpener) and so holds no key to derive the next one from,
// or whose key was forgotten.
var ErrNoKey = errors.New("no key to rekey from")

// keyState is one direction's current data key.
type keyState struct {
	cipher CipherID
	key    [KeySize]byte
	held   bool
}

// take keeps a copy of *key and zeroes *key.
func (k *keyState) take(c CipherID, key *[KeySize]byte) {
	k.cipher, k.key, k.held = c, *key, true
	clear(key[:])
}

// next derives the key after salt and returns it with its AEAD; the
// current key stays until commit. The caller zeroes the key it got back
// if it does not commit it.
func (k *keyState) next(salt []byte) ([KeySize]byte, cipher.AEAD, error) {
	if !k.held {
		return [KeySize]byte{}, nil, ErrNoKey
	}
	if len(salt) != SaltSize {
		return [KeySize]byte{}, nil, fmt.Errorf("%w: KEYUPDATE salt of %d bytes", ErrBadFrame, len(salt))
	}
	nk := RekeyKey(&k.key, salt)
	a, err := NewAEAD(k.cipher, &nk)
	if err != nil {
		clear(nk[:])
		return [KeySize]byte{}, nil, err
	}
	return nk, a, nil
}

// commit makes *nk the current key (overwriting the old) and zeroes *nk.
func (k *keyState) commit(nk *[KeySize]byte) {
	k.key = *nk
	clear(nk[:])
}

func (k *keyState) forget() {
	clear(k.key[:])
	k.held = false
}

// NewSealerKey returns a Sealer for cipher c under key that can rekey.
// It keeps key and zeroes the caller's copy.
func NewSealerKey(c CipherID, key *[KeySize]byte) (*Sealer, error) {
	a, err := NewAEAD(c, key)
	if err != nil {
		clear(key[:])
		return nil, err
	}
	s := NewSealer(a)
	s.keys.take(c, key)
	return s, nil
}

// NewOpenerKey returns an Opener for cipher c under key that can follow
// the peer's KEYUPDATE frames (Rekey). It keeps key and zeroes the
// caller's copy.
func NewOpenerKey(c CipherID, key *[KeySize]byte) (*Opener, error) {
	a, err := NewAEAD(c, key)
	if err != nil {
		clear(key[:])
		return nil, err
	}
	o := NewOpener(a)
	o.keys.take(c, key)
	return o, nil
}

// SealKeyUpdate appends a KEYUPDATE record carrying salt (SaltSize random
// bytes), sealed under the current key, to dst; then s seals under the
// next key, RekeyKey(current, salt), with its nonce counter back at 0,
// and the old key is overwritten. The next key is made before the record
// is sealed: on any error nothing was appended and s is unchanged, and
// the caller must end the session (a sender that cannot rekey must not
// go on under a worn key).
func (s *Sealer) SealKeyUpdate(dst, salt []byte) ([]byte, error) {
	nk, a, err := s.keys.next(salt)
	if err != nil {
		return dst, err
	}
	out, err := s.SealFrame(dst, &Frame{Type: FrameKeyUpdate, Payload: salt}, 0)
	if err != nil {
		clear(nk[:]) // the peer was not told: stay on the old key
		return out, err
	}
	s.keys.commit(&nk)
	s.aead, s.ctr = a, counter{limit: DefaultRecordLimit}
	return out, nil
}

// Rekey switches o to the key after salt, the payload of the KEYUPDATE it
// has just opened: RekeyKey(current, salt), nonce counter back at 0; the
// old key is overwritten. On an error o is unchanged.
func (o *Opener) Rekey(salt []byte) error {
	if o.err != nil {
		return o.err
	}
	nk, a, err := o.keys.next(salt)
	if err != nil {
		return err
	}
	o.keys.commit(&nk)
	o.aead, o.ctr, o.bodyLen = a, counter{limit: DefaultRecordLimit}, -1
	return nil
}

// Forget zeroes the key s holds (end of session); s can no longer rekey.
func (s *Sealer) Forget() { s.keys.forget() }

// Forget zeroes the key o holds (end of session); o can no longer rekey.
func (o *Opener) Forget() { o.keys.forget() }

// Records makes one side's record state from k: the Sealer of its sending
// direction (C2S for the client) and the Opener of the other, each
// keeping its key. k is zeroed.
func (k *SessionKeys) Records(c CipherID, client bool) (*Sealer, *Opener, error) {
	send, recv := &k.S2C, &k.C2S
	if client {
		send, recv = &k.C2S, &k.S2C
	}
	defer clear(k.C2S[:])
	defer clear(k.S2C[:])
	s, err := NewSealerKey(c, send)
	if err != nil {
		return nil, nil, err
	}
	o, err := NewOpenerKey(c, recv)
	if err != nil {
		s.Forget()
		return nil, nil, err
	}
	return s, o, nil
}

// DeriveRecords runs the data-key schedule of a finished handshake — the
// classic one (DeriveSessionKeys), or the hybrid one (DeriveHybridSessionKeys)
// when pq, the ML-KEM-768 shared secret, is set — and returns one side's
// record state (Records): the keys never leave wire. keyLog, if set, is
// shown the keys first (a plaintext capture records them; nil in normal
// use).
func DeriveRecords(psk *PSK, ch *ClientHello, sh *ServerHello, shared, pq []byte, client bool, keyLog func(*SessionKeys)) (*Sealer, *Opener, error) {
	hkC := ClientHandshakeKey(psk, &ch.Salt)
	hkS := ServerHandshakeKey(psk, &ch.Salt, &sh.Salt)
	defer clear(hkC[:])
	defer clear(hkS[:])
	var sk SessionKeys
	if pq == nil {
		sk = DeriveSessionKeys(shared, &hkC, &hkS, &ch.Public, &sh.Public)
	} else {
		ek, _ := ch.Ext.Get(ExtKEM)
		ct, _ := sh.Ext.Get(ExtKEM)
		sk = DeriveHybridSessionKeys(shared, pq, &hkC, &hkS, &ch.Public, &sh.Public, ek, ct)
	}
	if keyLog != nil {
		keyLog(&sk)
	}
	return sk.Records(ch.Cipher, client)
}
