package v1

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

// maxFuzzInput bounds the fuzzed stream length: longer inputs are cut,
// which keeps each run, and the fuzzer's minimisation, cheap.
const maxFuzzInput = 1024

// fuzzKeys are the keys the vectors use; the fuzzers pick one by index.
var fuzzKeys = []string{"usocks-v1 test key", "usocks-v1 session key", "usocks-v1 wrong key"}

// chunker cuts input into pieces of 1 to chunk+1 bytes, varying with
// position so that every alignment gets exercised.
func chunker(chunk uint16) func() int {
	i := 0
	return func() int {
		i++
		return 1 + (int(chunk)*i)%(int(chunk)+1)
	}
}

func sameDecode(t *testing.T, a, b decoded) {
	t.Helper()
	if len(a.msgs) != len(b.msgs) {
		t.Fatalf("%d vs %d messages", len(a.msgs), len(b.msgs))
	}
	for i := range a.msgs {
		if !bytes.Equal(a.msgs[i], b.msgs[i]) {
			t.Fatalf("message %d differs", i)
		}
	}
	if a.err != b.err || a.phase != b.phase || a.secure != b.secure || a.closes != b.closes {
		t.Fatalf("end differs: %v/%s/%v vs %v/%s/%v", a.err, a.phase, a.secure, b.err, b.phase, b.secure)
	}
}

func addStreamSeeds(f *testing.F) {
	var rf recordFile
	loadJSON(f, "record.json", &rf)
	for _, st := range rf.Streams {
		if st.Name == "basic" {
			stream := unhex(f, st.SyncCipherHex)
			for _, p := range st.Packets {
				stream = append(stream, unhex(f, p.CiphertextHex)...)
			}
			f.Add(stream, uint8(0), uint16(0))
		}
	}
	var sf sessionFile
	loadJSON(f, "session.json", &sf)
	// The session streams are cut short to keep fuzzing (and the
	// minimisation of new inputs) fast; their first 512 bytes still wait in
	// the middle of a 4112-byte packet.
	f.Add(unhex(f, sf.C2S.StreamHex)[:maxFuzzInput/2], uint8(1), uint16(5))
	f.Add(unhex(f, sf.S2C.StreamHex)[:maxFuzzInput/2], uint8(1), uint16(100))
	var nf negativeFile
	loadJSON(f, "negative.json", &nf)
	for i, c := range nf.Cases {
		k := uint8(0)
		if c.ReceiverKey != "" {
			k = 2
		}
		f.Add(unhex(f, c.InputHex), k, uint16(i))
	}
}

// FuzzOpener feeds arbitrary ciphertext: the Opener must not panic, and
// the result must not depend on how the input is cut.
func FuzzOpener(f *testing.F) {
	addStreamSeeds(f)
	f.Fuzz(func(t *testing.T, ct []byte, keyIdx uint8, chunk uint16) {
		ct = ct[:min(len(ct), maxFuzzInput)]
		key := DeriveKey(fuzzKeys[int(keyIdx)%len(fuzzKeys)])
		whole := decodeChunks(key, ct, func() int { return len(ct) + 1 })
		sameDecode(t, whole, decodeChunks(key, ct, chunker(chunk)))
	})
}

// refDecode is a straightforward decoder of a whole plaintext (the
// stream after the sync block) written from spec §3.6, used as an
// oracle for the incremental Opener.
func refDecode(plain []byte) (msgs [][]byte, secure bool, class string) {
	verified := false
	var pending []byte
	fail := func(c string) ([][]byte, bool, string) {
		if !verified {
			c = "FirstPacketIncorrectError"
		}
		return msgs, secure, c
	}
	for len(plain) >= 4 {
		l, p, typ := int(binary.BigEndian.Uint16(plain)), int(plain[2]), plain[3]
		n := 12 + l + p
		if n%16 != 0 || !slices.Contains([]byte{1, 2, 3, 254, 255}, typ) || (typ > 2 && l != 0) {
			return fail("InvalidHeaderError")
		}
		if len(plain) < n {
			break
		}
		if d := digest(plain[:n-8]); !bytes.Equal(d[:], plain[n-8:n]) {
			return fail("HashfailError")
		}
		verified = true
		data := plain[4 : 4+l]
		plain = plain[n:]
		switch typ {
		case 1:
			msgs = append(msgs, append(pending, data...))
			pending = nil
		case 2:
			pending = append(pending, data...)
		case 254:
			return msgs, secure, "RemoteResetException"
		case 255:
			secure = true
		}
	}
	if secure {
		return msgs, secure, "ConnectionClosedException"
	}
	return msgs, secure, "InsecureClosingError"
}

// fixDigests walks plain as packets and rewrites each digest that fits,
// so that the fuzzer reaches the code behind the digest check.
func fixDigests(plain []byte) {
	for len(plain) >= 4 {
		n := 12 + int(binary.BigEndian.Uint16(plain)) + int(plain[2])
		if n%16 != 0 || n > len(plain) {
			return
		}
		d := digest(plain[:n-8])
		copy(plain[n-8:n], d[:])
		plain = plain[n:]
	}
}

// FuzzOpenerPlaintext encrypts a fuzzed plaintext (digests optionally
// repaired) and checks the Opener against refDecode in two chunkings.
func FuzzOpenerPlaintext(f *testing.F) {
	var rf recordFile
	loadJSON(f, "record.json", &rf)
	for _, st := range rf.Streams {
		if st.Name == "basic" {
			var plain []byte
			for _, p := range st.Packets {
				plain = append(plain, unhex(f, *p.PlaintextHex)...)
			}
			f.Add(plain, false, uint16(3))
			f.Add(plain[:len(plain)-16], true, uint16(16))
		}
	}
	var nf negativeFile
	loadJSON(f, "negative.json", &nf)
	for _, c := range nf.Cases {
		var plain []byte
		for _, op := range c.SenderOps {
			if op.PlaintextHex != nil {
				plain = append(plain, unhex(f, *op.PlaintextHex)...)
			}
		}
		if len(plain) > 0 {
			f.Add(plain, false, uint16(1))
		}
	}
	// part(10), nodata, part(5), data(3) with bad digests, to be fixed.
	f.Add(unhex(f, "000a0a02"+"00000000000000000000000000000000000000000000000000000000"+
		"00000403"+"000000000000000000000000"), true, uint16(7))
	key := DeriveKey(fuzzKeys[0])
	f.Fuzz(func(t *testing.T, plain []byte, fix bool, chunk uint16) {
		plain = append([]byte{}, plain[:min(len(plain), maxFuzzInput)]...)
		plain = append(plain, make([]byte, (16-len(plain)%16)%16)...)
		if fix {
			fixDigests(plain)
		}
		s := NewSealer(key, [16]byte{1}, [16]byte{2})
		ct, err := s.AppendPlain(s.Sync(), plain)
		if err != nil {
			t.Fatal(err)
		}
		wantMsgs, wantSecure, wantClass := refDecode(plain)
		for _, sizes := range []func() int{func() int { return len(ct) }, chunker(chunk)} {
			d := decodeChunks(key, ct, sizes)
			if len(d.msgs) != len(wantMsgs) {
				t.Fatalf("%d messages, reference %d (%v)", len(d.msgs), len(wantMsgs), d.err)
			}
			for i := range wantMsgs {
				if !bytes.Equal(d.msgs[i], wantMsgs[i]) {
					t.Fatalf("message %d differs", i)
				}
			}
			if d.secure != wantSecure || !errors.Is(d.err, errorClasses[wantClass]) {
				t.Fatalf("end %v secure %v, reference %s %v", d.err, d.secure, wantClass, wantSecure)
			}
		}
	})
}

// FuzzParseMessage checks that parsing never panics, classifies errors
// exactly, and round-trips with reserved flag bits cleared.
func FuzzParseMessage(f *testing.F) {
	for _, c := range tunnelCodecTable {
		f.Add(unhex(f, c.hex))
	}
	for _, h := range []string{"", "01", "010200", "02020007616263", "01f20007", "01120007616263"} {
		f.Add(unhex(f, h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		switch {
		case len(b) < TunnelHeaderLen:
			if err != ErrShortMessage {
				t.Fatalf("short: %v", err)
			}
			return
		case b[0] != Version:
			if err != ErrBadVersion {
				t.Fatalf("version: %v", err)
			}
			return
		case err != nil:
			t.Fatal(err)
		}
		enc := AppendMessage(nil, m)
		want := append([]byte{}, b...)
		want[1] &= byte(FlagsMask)
		if !bytes.Equal(enc, want) {
			t.Fatalf("round trip %x -> %x", b, enc)
		}
		m2, err := ParseMessage(enc)
		if err != nil || m2.Flags != m.Flags&FlagsMask || m2.ID != m.ID || !bytes.Equal(m2.Payload, m.Payload) {
			t.Fatalf("re-parse %+v %v", m2, err)
		}
	})
}
