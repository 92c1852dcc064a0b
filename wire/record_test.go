package wire

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// testKey is a fixed record key for tests that do not care which key.
var testKey = [KeySize]byte{
	0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
	0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0,
}

func newAEAD(t testing.TB, c CipherID, key *[KeySize]byte) cipher.AEAD {
	t.Helper()
	a, err := NewAEAD(c, key)
	if err != nil {
		t.Fatalf("NewAEAD(%v): %v", c, err)
	}
	return a
}

// pair returns a fresh Sealer and Opener for one direction under key.
func pair(t testing.TB, c CipherID, key *[KeySize]byte) (*Sealer, *Opener) {
	t.Helper()
	return NewSealer(newAEAD(t, c, key)), NewOpener(newAEAD(t, c, key))
}

// mustSeal seals body as one record.
func mustSeal(t testing.TB, s *Sealer, body []byte) []byte {
	t.Helper()
	r, err := s.Seal(nil, body)
	if err != nil {
		t.Fatalf("Seal(%d bytes): %v", len(body), err)
	}
	return r
}

// randomBody is a body of n bytes with a valid frame header (the opener
// does not parse frames, but bodies shorter than the header are refused).
func randomBody(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// openAll feeds stream to o in chunks of the sizes chunk returns and gives
// back every body. It fails the test on an error or leftover bytes.
func openAll(t testing.TB, o *Opener, stream []byte, chunk func() int) [][]byte {
	t.Helper()
	var bodies [][]byte
	var buf []byte
	for len(stream) > 0 || len(buf) > 0 {
		if len(stream) > 0 {
			n := min(chunk(), len(stream))
			buf = append(buf, stream[:n]...)
			stream = stream[n:]
		}
		for {
			body, n, err := o.Open(nil, buf)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if n == 0 {
				if len(buf) >= o.Need() {
					t.Fatalf("Open made no progress with %d bytes, Need() = %d", len(buf), o.Need())
				}
				break
			}
			bodies = append(bodies, body)
			buf = buf[n:]
		}
		if len(stream) == 0 && len(buf) > 0 {
			t.Fatalf("%d bytes left over after the last record", len(buf))
		}
	}
	return bodies
}

var recordSizes = []int{
	FrameHeaderLen, FrameHeaderLen + 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257,
	1023, 1024, 1400, 4096, MaxPayloadLen, MaxPayloadLen + FrameHeaderLen, 32768, MaxBodyLen - 1, MaxBodyLen,
}

func TestRecordRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range ciphers {
		t.Run(c.String(), func(t *testing.T) {
			s, o := pair(t, c, &testKey)
			for _, n := range recordSizes {
				body := randomBody(rng, n)
				rec := mustSeal(t, s, body)
				if len(rec) != n+RecordOverhead {
					t.Fatalf("record of %d-byte body is %d bytes, want %d", n, len(rec), n+RecordOverhead)
				}
				if bytes.Contains(rec, body[:min(n, 16)]) {
					t.Errorf("%d: plaintext visible in record", n)
				}
				// Open in place, as the doc comment suggests.
				got, used, err := o.Open(rec[LengthBoxSize:LengthBoxSize], rec)
				if err != nil || used != len(rec) {
					t.Fatalf("Open(%d): used %d err %v", n, used, err)
				}
				if !bytes.Equal(got, body) {
					t.Fatalf("Open(%d): body differs", n)
				}
			}
			// Seal appends after what dst already holds.
			body := randomBody(rng, 100)
			out, err := s.Seal([]byte("keep"), body)
			if err != nil || string(out[:4]) != "keep" || len(out) != 4+100+RecordOverhead {
				t.Fatalf("Seal with prefix: %q... err %v", out[:4], err)
			}
			if got, _, err := o.Open(nil, out[4:]); err != nil || !bytes.Equal(got, body) {
				t.Fatalf("Open after prefixed Seal: %v", err)
			}
		})
	}
}

func TestSealRejectsBodyLength(t *testing.T) {
	s, o := pair(t, CipherChaCha20Poly1305, &testKey)
	for _, n := range []int{0, MaxBodyLen + 1, 1 << 20} {
		out, err := s.Seal([]byte("x"), make([]byte, n))
		if err == nil || errors.Is(err, ErrKeyExhausted) || string(out) != "x" {
			t.Errorf("Seal(%d bytes) = %q, %v; want a length error and dst unchanged", n, out, err)
		}
	}
	// The length error is the caller's mistake, not a spent key: not sticky,
	// and it used no nonce.
	if s.Count() != 0 {
		t.Fatalf("rejected Seal used %d nonces", s.Count())
	}
	rec := mustSeal(t, s, make([]byte, 10))
	if _, _, err := o.Open(nil, rec); err != nil {
		t.Fatalf("record after a rejected Seal: %v", err)
	}
}

// TestSealBodyBelowFrameHeader shows that Seal and Open disagree on the
// smallest body: Seal documents and accepts 1..MaxBodyLen, Open refuses a
// length below FrameHeaderLen as ErrAuth, so a sealed 1..5-byte body kills the
// receiving session.
func TestSealBodyBelowFrameHeader(t *testing.T) {
	s, _ := pair(t, CipherChaCha20Poly1305, &testKey)
	for n := 1; n < FrameHeaderLen; n++ {
		if _, err := s.Seal(nil, make([]byte, n)); err == nil {
			t.Errorf("Seal accepted a %d-byte body that no Opener will open", n)
		}
	}
}

// TestDefaultRecordLimit: requirement 12 ends a key after at most 2^24
// records (hard close at 2x without rekey); one record is two AEAD
// operations. TLS 1.3 (RFC 8446 §5.5) also caps AES-GCM at 2^24.5 records.
func TestDefaultRecordLimit(t *testing.T) {
	if DefaultRecordLimit > 2*2*(1<<24) {
		t.Fatalf("DefaultRecordLimit = %d AEAD operations = %d records", uint64(DefaultRecordLimit), uint64(DefaultRecordLimit)/2)
	}
}

// recordStream seals count records of random sizes in [lo, hi] and returns
// the stream and the bodies.
func recordStream(t testing.TB, s *Sealer, rng *rand.Rand, count, lo, hi int) ([]byte, [][]byte) {
	t.Helper()
	var stream []byte
	var bodies [][]byte
	for range count {
		b := randomBody(rng, lo+rng.IntN(hi-lo+1))
		var err error
		stream, err = s.Seal(stream, b)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	return stream, bodies
}

func TestOpenSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range ciphers {
		t.Run(c.String(), func(t *testing.T) {
			s, _ := pair(t, c, &testKey)
			stream, want := recordStream(t, s, rng, 60, FrameHeaderLen, 3000)
			// Include a max-size record in the middle and a minimal one last.
			big := randomBody(rng, MaxBodyLen)
			stream, _ = s.Seal(stream, big)
			small := randomBody(rng, FrameHeaderLen)
			stream, _ = s.Seal(stream, small)
			want = append(want, big, small)

			splits := map[string]func() int{
				"whole":        func() int { return len(stream) },
				"byte by byte": func() int { return 1 },
				"random":       func() int { return 1 + rng.IntN(5000) },
				"small random": func() int { return 1 + rng.IntN(40) },
				"length box":   func() int { return LengthBoxSize },
			}
			for name, chunk := range splits {
				_, o := pair(t, c, &testKey)
				got := openAll(t, o, stream, chunk)
				if len(got) != len(want) {
					t.Fatalf("%s: %d bodies, want %d", name, len(got), len(want))
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("%s: body %d differs", name, i)
					}
				}
				if o.Count() != s.Count() {
					t.Errorf("%s: opener used %d nonces, sealer %d", name, o.Count(), s.Count())
				}
			}
		})
	}
}

func TestOpenNeed(t *testing.T) {
	s, o := pair(t, CipherAES256GCM, &testKey)
	rec := mustSeal(t, s, make([]byte, 100))
	if o.Need() != LengthBoxSize {
		t.Fatalf("fresh Need() = %d", o.Need())
	}
	for i := range LengthBoxSize {
		if _, n, err := o.Open(nil, rec[:i]); n != 0 || err != nil {
			t.Fatalf("Open(%d bytes) = %d, %v", i, n, err)
		}
	}
	if _, n, err := o.Open(nil, rec[:LengthBoxSize]); n != 0 || err != nil {
		t.Fatalf("Open(length box) = %d, %v", n, err)
	}
	if o.Need() != len(rec) {
		t.Fatalf("Need() after length box = %d, want %d", o.Need(), len(rec))
	}
	if _, n, err := o.Open(nil, rec[:len(rec)-1]); n != 0 || err != nil {
		t.Fatalf("Open(all but one) = %d, %v", n, err)
	}
	if _, n, err := o.Open(nil, rec); n != len(rec) || err != nil {
		t.Fatalf("Open(all) = %d, %v", n, err)
	}
	if o.Need() != LengthBoxSize {
		t.Fatalf("Need() after a record = %d", o.Need())
	}
}

func TestSealFrameEqualsSeal(t *testing.T) {
	for _, c := range ciphers {
		t.Run(c.String(), func(t *testing.T) {
			s1, o := pair(t, c, &testKey)
			s2, _ := pair(t, c, &testKey)
			for i, tc := range frameCases {
				var dst []byte
				switch i % 3 {
				case 1: // a prefix and enough room: SealFrame works in place
					dst = make([]byte, 3, 3+RecordOverhead+FrameHeaderLen+len(tc.f.Payload)+tc.padLen)
					copy(dst, "abc")
				case 2: // a prefix without room: SealFrame must grow
					dst = []byte("xyz")
				}
				prefix := bytes.Clone(dst)
				got, err := s1.SealFrame(dst, &tc.f, tc.padLen)
				if err != nil {
					t.Fatalf("%s: SealFrame: %v", tc.name, err)
				}
				want, err := s2.Seal(bytes.Clone(prefix), AppendFrame(nil, &tc.f, tc.padLen))
				if err != nil {
					t.Fatalf("%s: Seal: %v", tc.name, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: SealFrame differs from Seal(AppendFrame)", tc.name)
				}
				body, _, err := o.Open(nil, got[len(prefix):])
				if err != nil || hexs(body) != tc.hex {
					t.Fatalf("%s: opened %x, %v", tc.name, body, err)
				}
			}
		})
	}
}

func TestSealFrameTooLarge(t *testing.T) {
	s, o := pair(t, CipherChaCha20Poly1305, &testKey)
	f := Frame{Type: FrameStream, Flags: FlagDAT, Stream: 1, Payload: make([]byte, MaxBodyLen)}
	out, err := s.SealFrame([]byte("p"), &f, 0)
	if err == nil || string(out) != "p" {
		t.Fatalf("oversized frame: %q, %v", out, err)
	}
	ok := Frame{Type: FramePad}
	rec, err := s.SealFrame(nil, &ok, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Open(nil, rec); err != nil {
		t.Fatalf("record after a refused frame: %v", err)
	}
}

// nonceN is the record layer's nonce for operation n: u64 little-endian in
// the first 8 bytes, zeros after.
func nonceN(n uint64) []byte {
	b := make([]byte, NonceSize)
	binary.LittleEndian.PutUint64(b, n)
	return b
}

func TestNonceCounter(t *testing.T) {
	if hexs(nonceN(0)) != "000000000000000000000000" || hexs(nonceN(1)) != "010000000000000000000000" || hexs(nonceN(0x0102)) != "020100000000000000000000" {
		t.Fatal("nonceN helper is wrong")
	}
	for _, c := range ciphers {
		t.Run(c.String(), func(t *testing.T) {
			raw := newAEAD(t, c, &testKey)
			s, o := pair(t, c, &testKey)
			b1 := []byte("first record body")
			b2 := []byte("second record, a bit longer")
			r1 := mustSeal(t, s, b1)
			r2 := mustSeal(t, s, b2)
			if s.Count() != 4 {
				t.Fatalf("sealer Count() = %d after two records, want 4", s.Count())
			}
			// Record i is AEAD(len, nonce 2i) | AEAD(body, nonce 2i+1).
			want1 := raw.Seal(raw.Seal(nil, nonceN(0), []byte{0, byte(len(b1))}, nil), nonceN(1), b1, nil)
			want2 := raw.Seal(raw.Seal(nil, nonceN(2), []byte{0, byte(len(b2))}, nil), nonceN(3), b2, nil)
			if !bytes.Equal(r1, want1) || !bytes.Equal(r2, want2) {
				t.Fatalf("records do not use nonces 0,1 and 2,3:\n%x\n%x", r1, want1)
			}
			if _, _, err := o.Open(nil, r1); err != nil {
				t.Fatal(err)
			}
			if _, _, err := o.Open(nil, r2); err != nil {
				t.Fatal(err)
			}
			if o.Count() != 4 {
				t.Fatalf("opener Count() = %d after two records, want 4", o.Count())
			}
			// Past one byte of counter: box 256 uses nonce 00 01 00 ...
			for s.Count() < 256 {
				if _, err := s.SealBox(nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			box, err := s.SealBox(nil, []byte("n256"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(box, raw.Seal(nil, nonceN(256), []byte("n256"), nil)) {
				t.Fatal("box 256 does not use nonce 0001000000000000")
			}
		})
	}
}

func TestDuplicatedRecord(t *testing.T) {
	for _, c := range ciphers {
		s, o := pair(t, c, &testKey)
		r1 := mustSeal(t, s, []byte("record one"))
		r2 := mustSeal(t, s, []byte("record two"))
		if _, _, err := o.Open(nil, r1); err != nil {
			t.Fatal(err)
		}
		if _, n, err := o.Open(nil, r1); !errors.Is(err, ErrAuth) || n != 0 {
			t.Fatalf("%v: duplicated record: n %d err %v, want ErrAuth", c, n, err)
		}
		// Sticky: the genuine next record is refused too.
		if _, _, err := o.Open(nil, r2); !errors.Is(err, ErrAuth) {
			t.Fatalf("%v: after ErrAuth the next record gave %v", c, err)
		}
	}
}

func TestReorderedRecords(t *testing.T) {
	for _, c := range ciphers {
		s, o := pair(t, c, &testKey)
		r1 := mustSeal(t, s, []byte("record one"))
		r2 := mustSeal(t, s, []byte("record two"))
		if _, _, err := o.Open(nil, r2); !errors.Is(err, ErrAuth) {
			t.Fatalf("%v: second record first: %v, want ErrAuth", c, err)
		}
		if _, _, err := o.Open(nil, r1); !errors.Is(err, ErrAuth) {
			t.Fatalf("%v: after ErrAuth the first record gave %v", c, err)
		}
		// Also with the two records swapped within one buffer.
		_, o2 := pair(t, c, &testKey)
		swapped := append(bytes.Clone(r2), r1...)
		if _, _, err := o2.Open(nil, swapped); !errors.Is(err, ErrAuth) {
			t.Fatalf("%v: swapped stream: %v", c, err)
		}
	}
}

// TestBitFlips flips every bit of a recorded stream, one at a time: every
// flip must end in ErrAuth, no record at or after the flip may open, and the
// opener stays failed.
func TestBitFlips(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range ciphers {
		t.Run(c.String(), func(t *testing.T) {
			s, _ := pair(t, c, &testKey)
			sizes := []int{FrameHeaderLen, 20, 47, 130}
			var stream []byte
			var ends []int // offset after each record
			var bodies [][]byte
			for _, n := range sizes {
				b := randomBody(rng, n)
				stream = mustSealAppend(t, s, stream, b)
				ends = append(ends, len(stream))
				bodies = append(bodies, b)
			}
			aead := newAEAD(t, c, &testKey)
			for bit := range len(stream) * 8 {
				mut := bytes.Clone(stream)
				mut[bit/8] ^= 1 << (bit % 8)
				o := NewOpener(aead)
				buf := mut
				opened := 0
				var err error
				for {
					var body []byte
					var n int
					body, n, err = o.Open(nil, buf)
					if err != nil || n == 0 {
						break
					}
					if !bytes.Equal(body, bodies[opened]) {
						t.Fatalf("bit %d: record %d opened to a different body", bit, opened)
					}
					if bit/8 < ends[opened] {
						t.Fatalf("bit %d: record %d containing the flip opened", bit, opened)
					}
					opened++
					buf = buf[n:]
				}
				if !errors.Is(err, ErrAuth) {
					t.Fatalf("bit %d: stream ended with %v after %d records, want ErrAuth", bit, err, opened)
				}
				// Sticky: the untouched remainder of the genuine stream,
				// and the genuine record that failed, are refused.
				start := 0
				if opened > 0 {
					start = ends[opened-1]
				}
				if _, _, err := o.Open(nil, stream[start:]); !errors.Is(err, ErrAuth) {
					t.Fatalf("bit %d: opener not sticky: %v", bit, err)
				}
			}
		})
	}
}

func mustSealAppend(t testing.TB, s *Sealer, dst, body []byte) []byte {
	t.Helper()
	out, err := s.Seal(dst, body)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLengthBelowHeader seals, with the record layer's own AEAD and nonce,
// a length box that decodes to 0..FrameHeaderLen-1: an authentic but
// out-of-range length must be ErrAuth, exactly like a bad tag.
func TestLengthBelowHeader(t *testing.T) {
	for _, c := range ciphers {
		raw := newAEAD(t, c, &testKey)
		for l := range FrameHeaderLen + 1 {
			box := raw.Seal(nil, nonceN(0), binary.BigEndian.AppendUint16(nil, uint16(l)), nil)
			rec := raw.Seal(box, nonceN(1), make([]byte, l), nil)
			o := NewOpener(newAEAD(t, c, &testKey))
			_, _, err := o.Open(nil, rec)
			if l < FrameHeaderLen {
				if !errors.Is(err, ErrAuth) {
					t.Fatalf("%v: length %d: %v, want ErrAuth", c, l, err)
				}
				// The same error from every later call.
				if _, _, err := o.Open(nil, rec); !errors.Is(err, ErrAuth) {
					t.Fatalf("%v: length %d: not sticky: %v", c, l, err)
				}
			} else if err != nil {
				t.Fatalf("%v: length %d (the minimum) refused: %v", c, l, err)
			}
		}
	}
}

func TestSealerLimit(t *testing.T) {
	for _, limit := range []uint64{4, 5} {
		s, o := pair(t, CipherChaCha20Poly1305, &testKey)
		s.SetLimit(limit)
		r1 := mustSeal(t, s, []byte("record one"))
		r2 := mustSeal(t, s, []byte("record two"))
		out, err := s.Seal([]byte("dst"), []byte("record three"))
		if !errors.Is(err, ErrKeyExhausted) || string(out) != "dst" {
			t.Fatalf("limit %d: third record: %q, %v; want ErrKeyExhausted", limit, out, err)
		}
		if s.Count() != 4 {
			t.Fatalf("limit %d: refused record used nonces: Count() = %d", limit, s.Count())
		}
		// Sticky, even if the limit is raised again, for records and boxes.
		s.SetLimit(DefaultRecordLimit)
		if _, err := s.Seal(nil, []byte("record four")); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("limit %d: after exhaustion: %v", limit, err)
		}
		if _, err := s.SealBox(nil, []byte("box")); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("limit %d: SealBox after exhaustion: %v", limit, err)
		}
		f := Frame{Type: FramePad}
		if _, err := s.SealFrame(nil, &f, 0); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("limit %d: SealFrame after exhaustion: %v", limit, err)
		}
		for _, r := range [][]byte{r1, r2} {
			if _, _, err := o.Open(nil, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	// SealBox alone stops at the limit too.
	s, _ := pair(t, CipherAES256GCM, &testKey)
	s.SetLimit(3)
	for i := range 3 {
		if _, err := s.SealBox(nil, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SealBox(nil, []byte{3}); !errors.Is(err, ErrKeyExhausted) {
		t.Fatalf("SealBox at limit: %v", err)
	}
	// A limit lowered below the count is exhausted, not wrapped around.
	s2, _ := pair(t, CipherAES256GCM, &testKey)
	mustSeal(t, s2, make([]byte, 8))
	mustSeal(t, s2, make([]byte, 8))
	s2.SetLimit(1)
	if _, err := s2.Seal(nil, make([]byte, 8)); !errors.Is(err, ErrKeyExhausted) {
		t.Fatalf("limit below count: %v", err)
	}
}

func TestOpenerLimit(t *testing.T) {
	for _, limit := range []uint64{4, 5} {
		s, o := pair(t, CipherAES256GCM, &testKey)
		o.SetLimit(limit)
		var recs [][]byte
		for range 4 {
			recs = append(recs, mustSeal(t, s, make([]byte, 12)))
		}
		for _, r := range recs[:2] {
			if _, _, err := o.Open(nil, r); err != nil {
				t.Fatal(err)
			}
		}
		body, n, err := o.Open(nil, recs[2])
		if !errors.Is(err, ErrKeyExhausted) || n != 0 || body != nil {
			t.Fatalf("limit %d: third record: %x %d %v, want ErrKeyExhausted", limit, body, n, err)
		}
		o.SetLimit(DefaultRecordLimit)
		if _, _, err := o.Open(nil, recs[2]); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("limit %d: not sticky: %v", limit, err)
		}
		if _, err := o.OpenBox(nil, recs[3][:LengthBoxSize]); !errors.Is(err, ErrKeyExhausted) {
			t.Fatalf("limit %d: OpenBox after exhaustion: %v", limit, err)
		}
	}
}

// TestRFC8439AEAD runs RFC 8439 §2.8.2 through NewAEAD.
func TestRFC8439AEAD(t *testing.T) {
	key := unhex32(t, "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
	nonce := unhex(t, "070000004041424344454647")
	aad := unhex(t, "50515253c0c1c2c3c4c5c6c7")
	pt := []byte("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.")
	want := "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b" +
		"1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3f" +
		"f4def08e4b7a9de576d26586cec64b6116" + "1ae10b594f09e26a7e902ecbd0600691"
	a := newAEAD(t, CipherChaCha20Poly1305, &key)
	if a.NonceSize() != NonceSize || a.Overhead() != TagSize {
		t.Fatalf("nonce %d overhead %d", a.NonceSize(), a.Overhead())
	}
	ct := a.Seal(nil, nonce, pt, aad)
	if hexs(ct) != want {
		t.Fatalf("RFC 8439 2.8.2: got %x", ct)
	}
	if got, err := a.Open(nil, nonce, ct, aad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("open: %v", err)
	}
}

// TestGCMVectors runs the McGrew–Viega GCM test cases 13–16 (AES-256) through
// NewAEAD.
func TestGCMVectors(t *testing.T) {
	k16 := "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
	p16 := "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
	c16 := "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
	zero := "0000000000000000000000000000000000000000000000000000000000000000"
	for _, tc := range []struct {
		name, key, iv, pt, aad, ct, tag string
	}{
		{"TC13", zero, "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
		{"TC14", zero, "000000000000000000000000", "00000000000000000000000000000000", "", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
		{"TC15", k16, "cafebabefacedbaddecaf888", p16, "", c16, "b094dac5d93471bdec1a502270e3cc6c"},
		{"TC16", k16, "cafebabefacedbaddecaf888", p16[:120], "feedfacedeadbeeffeedfacedeadbeefabaddad2", c16[:120], "76fc6ece0f4e1768cddf8853bb2d551b"},
	} {
		key := unhex32(t, tc.key)
		a := newAEAD(t, CipherAES256GCM, &key)
		got := a.Seal(nil, unhex(t, tc.iv), unhex(t, tc.pt), unhex(t, tc.aad))
		if hexs(got) != tc.ct+tc.tag {
			t.Errorf("%s: got %x", tc.name, got)
		}
	}
}

// TestRecordNonceKnownAnswers checks the record layer's nonce convention
// against published values that happen to use the all-zero nonce, which is
// the first nonce of every direction: GCM test case 14, and RFC 8439 A.1
// test vector #2 (the ChaCha20 keystream block 1 under the zero key and
// nonce, which is what AEAD_CHACHA20_POLY1305 XORs onto the plaintext).
func TestRecordNonceKnownAnswers(t *testing.T) {
	var zero [KeySize]byte
	s := NewSealer(newAEAD(t, CipherAES256GCM, &zero))
	box, err := s.SealBox(nil, make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	if hexs(box) != "cea7403d4d606b6e074ec5d3baf39d18"+"d0d1c8a799996bf0265b98b5d48ab919" {
		t.Errorf("GCM TC14 through the Sealer: %x", box)
	}
	s = NewSealer(newAEAD(t, CipherChaCha20Poly1305, &zero))
	box, err = s.SealBox(nil, make([]byte, 64))
	if err != nil {
		t.Fatal(err)
	}
	const block1 = "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
	if hexs(box[:64]) != block1 {
		t.Errorf("ChaCha20 block 1 through the Sealer: %x", box[:64])
	}
	raw, _ := chacha20poly1305.New(zero[:])
	if !bytes.Equal(box, raw.Seal(nil, nonceN(0), make([]byte, 64), nil)) {
		t.Errorf("first box is not sealed with the zero nonce")
	}
}

func TestNewAEADUnknown(t *testing.T) {
	for _, c := range []CipherID{0, 3, 255} {
		if _, err := NewAEAD(c, &testKey); err == nil {
			t.Errorf("NewAEAD(%d) accepted", c)
		}
	}
}

func TestParseCipher(t *testing.T) {
	for s, want := range map[string]CipherID{
		"":                       DefaultCipher(),
		"auto":                   DefaultCipher(),
		"chacha20-poly1305":      CipherChaCha20Poly1305,
		"chacha20-ietf-poly1305": CipherChaCha20Poly1305,
		"aes-256-gcm":            CipherAES256GCM,
	} {
		if got, err := ParseCipher(s); err != nil || got != want {
			t.Errorf("ParseCipher(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"aes-128-gcm", "AES-256-GCM", "none", "rc4-md5"} {
		if _, err := ParseCipher(s); err == nil {
			t.Errorf("ParseCipher(%q) accepted", s)
		}
	}
	if d := DefaultCipher(); d != CipherChaCha20Poly1305 && d != CipherAES256GCM {
		t.Errorf("DefaultCipher() = %v", d)
	}
	if CipherChaCha20Poly1305.String() != "chacha20-poly1305" || CipherAES256GCM.String() != "aes-256-gcm" || CipherID(9).String() != "cipher(9)" {
		t.Error("CipherID.String")
	}
}

// chiSquare is Pearson's statistic of counts against a uniform distribution
// over 256 byte values.
func chiSquare(counts *[256]int, total int) float64 {
	exp := float64(total) / 256
	var x float64
	for _, c := range counts {
		d := float64(c) - exp
		x += d * d / exp
	}
	return x
}

// chiCritical is the χ² critical value for dof degrees of freedom at upper
// tail probability p with normal quantile z (Wilson–Hilferty). For 255 dof
// and p = 1e-4 (z = 3.719) it is about 347.
func chiCritical(dof, z float64) float64 {
	h := 2 / (9 * dof)
	return dof * math.Pow(1-h+z*math.Sqrt(h), 3)
}

// TestRecordBoundaryUniformity records 10,000 records of random sizes and
// checks that the bytes around record and box boundaries are uniform: the
// first two bytes of every record (the sealed length), the first byte of the
// body box and the last byte of the record.
func TestRecordBoundaryUniformity(t *testing.T) {
	const records = 10000
	crit := chiCritical(255, 3.719) // p = 0.0001
	if crit < 340 || crit > 355 {
		t.Fatalf("critical value %f out of range", crit)
	}
	for _, c := range ciphers {
		t.Run(c.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(c)))
			key := testKey
			key[0] ^= byte(c)
			s, _ := pair(t, c, &key)
			var at0, at1, atBody, atLast, plainLenHi [256]int
			var rec []byte
			for range records {
				// Sizes spread over two length bytes, weighted to small.
				n := FrameHeaderLen + rng.IntN(1+rng.IntN(4000))
				var err error
				rec, err = s.Seal(rec[:0], randomBody(rng, n))
				if err != nil {
					t.Fatal(err)
				}
				at0[rec[0]]++
				at1[rec[1]]++
				atBody[rec[LengthBoxSize]]++
				atLast[rec[len(rec)-1]]++
				plainLenHi[n>>8]++
			}
			for name, counts := range map[string]*[256]int{
				"record byte 0":    &at0,
				"record byte 1":    &at1,
				"body box byte 0":  &atBody,
				"record last byte": &atLast,
			} {
				x := chiSquare(counts, records)
				t.Logf("%s: χ² = %.1f (critical %.1f)", name, x, crit)
				if x > crit {
					t.Errorf("%s: χ² = %.1f > %.1f: not uniform", name, x, crit)
				}
			}
			// The test has power: the plaintext length's high byte fails.
			if x := chiSquare(&plainLenHi, records); x <= crit {
				t.Errorf("control: plaintext length byte passes (χ² = %.1f)", x)
			}
		})
	}
}
