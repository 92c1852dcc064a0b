package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

// rekeyFrames is a stream with two KEYUPDATEs; rekeyKAT holds the SHA-256
// of its bytes per cipher (key 00 01 … 1f, salts a0… and 50…, padding 3i
// on data frames). The digests were taken from the key schedule as first
// shipped (RekeyKey applied outside the Sealer): moving rekeying into the
// Sealer and Opener must not change a byte on the wire.
var rekeyKAT = map[CipherID]string{
	CipherChaCha20Poly1305: "829cc5dc9cd2847a9e90b097651cb712d41ff22aa10fb37d6299a46ac8731321",
	CipherAES256GCM:        "4985ca9ad178c424872cf97cd6efa29f09fa46f100845eb697211863e65bc51e",
}

func rekeyFrames() []Frame {
	salt1, salt2 := make([]byte, SaltSize), make([]byte, SaltSize)
	for i := range salt1 {
		salt1[i], salt2[i] = byte(0xa0+i), byte(0x50+i)
	}
	return []Frame{
		{Type: FrameStream, Flags: FlagSYN | FlagDAT, Stream: 1, Payload: []byte("before")},
		{Type: FrameKeyUpdate, Payload: salt1},
		{Type: FrameStream, Flags: FlagDAT, Stream: 1, Payload: []byte("between")},
		{Type: FrameKeyUpdate, Payload: salt2},
		{Type: FrameStream, Flags: FlagDAT | FlagFIN, Stream: 1, Payload: []byte("after")},
	}
}

func katKey() [KeySize]byte {
	var k [KeySize]byte
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// referenceStream seals frames with the key schedule spelled out:
// RekeyKey, a new AEAD, a new counter at each KEYUPDATE (sealed unpadded
// under the old key).
func referenceStream(t *testing.T, c CipherID, key [KeySize]byte, frames []Frame) []byte {
	a, _ := NewAEAD(c, &key)
	s := NewSealer(a)
	var out []byte
	var err error
	for i, f := range frames {
		pad := 3 * i
		if f.Type == FrameKeyUpdate {
			pad = 0
		}
		if out, err = s.SealFrame(out, &f, pad); err != nil {
			t.Fatal(err)
		}
		if f.Type == FrameKeyUpdate {
			key = RekeyKey(&key, f.Payload)
			a, _ := NewAEAD(c, &key)
			s = NewSealer(a)
		}
	}
	return out
}

func TestRekeyKeepsTheKeySchedule(t *testing.T) {
	for _, c := range ciphers {
		t.Run(c.String(), func(t *testing.T) {
			frames := rekeyFrames()
			ref := referenceStream(t, c, katKey(), frames)
			if sum := sha256.Sum256(ref); hex.EncodeToString(sum[:]) != rekeyKAT[c] {
				t.Fatalf("reference stream digest %x, want %s", sum, rekeyKAT[c])
			}
			key := katKey()
			s, err := NewSealerKey(c, &key)
			if err != nil {
				t.Fatal(err)
			}
			if key != ([KeySize]byte{}) {
				t.Fatal("NewSealerKey left the caller's copy of the key")
			}
			var got []byte
			for i, f := range frames {
				if f.Type == FrameKeyUpdate {
					got, err = s.SealKeyUpdate(got, f.Payload)
				} else {
					got, err = s.SealFrame(got, &f, 3*i)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, ref) {
				t.Fatal("Sealer.SealKeyUpdate changed the bytes on the wire")
			}
			if s.keys.key == katKey() || s.Count() != 2 {
				t.Fatalf("after two rekeys: key unchanged or counter %d, want 2", s.Count())
			}
			r := readerOf(t, c, katKey())
			r.Feed(got)
			for i := range frames {
				f, _, ok, err := r.Next(nil)
				if !ok || err != nil || f.Type != frames[i].Type || !bytes.Equal(f.Payload, frames[i].Payload) {
					t.Fatalf("frame %d: %v %v %v", i, f, ok, err)
				}
			}
			s.Forget()
			r.Opener.Forget()
			if s.keys.key != ([KeySize]byte{}) || r.Opener.keys.key != ([KeySize]byte{}) {
				t.Fatal("Forget left key material")
			}
			if _, err := s.SealKeyUpdate(nil, frames[1].Payload); !errors.Is(err, ErrNoKey) {
				t.Fatalf("rekey after Forget: %v, want ErrNoKey", err)
			}
		})
	}
}

// A failed KEYUPDATE leaves the sealer as it was: same key, same counter,
// nothing appended.
func TestSealKeyUpdateFailureChangesNothing(t *testing.T) {
	key := katKey()
	s, _ := NewSealerKey(CipherChaCha20Poly1305, &key)
	before := s.keys.key
	out, err := s.SealKeyUpdate([]byte("x"), []byte("short salt"))
	if err == nil || string(out) != "x" || s.keys.key != before || s.Count() != 0 {
		t.Fatalf("bad salt: %v, %q, key changed %v, count %d", err, out, s.keys.key != before, s.Count())
	}
	s.SetLimit(1) // the KEYUPDATE itself cannot be sealed
	out, err = s.SealKeyUpdate(nil, make([]byte, SaltSize))
	if !errors.Is(err, ErrKeyExhausted) || len(out) != 0 || s.keys.key != before {
		t.Fatalf("exhausted: %v, %d bytes, key changed %v", err, len(out), s.keys.key != before)
	}
	a, _ := NewAEAD(CipherChaCha20Poly1305, &before)
	if _, err := NewSealer(a).SealKeyUpdate(nil, make([]byte, SaltSize)); !errors.Is(err, ErrNoKey) {
		t.Fatalf("a sealer made from an AEAD rekeyed: %v", err)
	}
}

// DeriveRecords: the client's Sealer is the server's Opener's peer and
// the other way round, the key log sees the keys DeriveSessionKeys makes,
// and both sides can follow a rekey.
func TestDeriveRecords(t *testing.T) {
	psk := PSK(katKey())
	ch := &ClientHello{Cipher: CipherChaCha20Poly1305}
	sh := &ServerHello{}
	for i := range ch.Salt {
		ch.Salt[i], sh.Salt[i], ch.Public[i], sh.Public[i] = byte(i), byte(2*i), byte(3*i), byte(5*i)
	}
	shared := bytes.Repeat([]byte{7}, 32)
	hkC, hkS := ClientHandshakeKey(&psk, &ch.Salt), ServerHandshakeKey(&psk, &ch.Salt, &sh.Salt)
	want := DeriveSessionKeys(shared, &hkC, &hkS, &ch.Public, &sh.Public)
	var logged SessionKeys
	cs, co, err := DeriveRecords(&psk, ch, sh, shared, nil, true, func(k *SessionKeys) { logged = *k })
	if err != nil {
		t.Fatal(err)
	}
	if logged != want {
		t.Fatal("the key log does not see the session keys")
	}
	ss, so, err := DeriveRecords(&psk, ch, sh, shared, nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []struct {
		name string
		s    *Sealer
		o    *Opener
	}{{"c2s", cs, so}, {"s2c", ss, co}} {
		f := Frame{Type: FrameStream, Flags: FlagDAT, Stream: 1, Payload: []byte(dir.name)}
		b, _ := dir.s.SealFrame(nil, &f, 0)
		b, err = dir.s.SealKeyUpdate(b, bytes.Repeat([]byte{9}, SaltSize))
		if err != nil {
			t.Fatal(err)
		}
		b, _ = dir.s.SealFrame(b, &f, 0)
		r := NewRecordReader(dir.o, 64)
		r.Feed(b)
		for i := 0; i < 3; i++ {
			if _, _, ok, err := r.Next(nil); !ok || err != nil {
				t.Fatalf("%s record %d: %v %v", dir.name, i, ok, err)
			}
		}
	}
}
