package v1

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
)

func TestDeriveKey(t *testing.T) {
	var f recordFile
	loadJSON(t, "record.json", &f)
	if len(f.KeyDerivation) == 0 {
		t.Fatal("no key_derivation vectors")
	}
	for _, kd := range f.KeyDerivation {
		got := DeriveKey(kd.Key)
		if hex.EncodeToString(got[:]) != kd.AESKeyHex {
			t.Errorf("DeriveKey(%q) = %x, want %s", kd.Key, got, kd.AESKeyHex)
		}
	}
}

func TestPacketTypeString(t *testing.T) {
	for _, c := range []struct {
		t    PacketType
		want string
	}{
		{PacketData, "data"}, {PacketPart, "part"}, {PacketNodata, "nodata"},
		{PacketReset, "reset"}, {PacketClose, "close"}, {4, "PacketType(4)"},
	} {
		if got := c.t.String(); got != c.want {
			t.Errorf("%d.String() = %q, want %q", uint8(c.t), got, c.want)
		}
	}
}

func TestPaddingAndSizes(t *testing.T) {
	for _, c := range []struct{ n, pad, sealed int }{
		{0, 4, 16}, {1, 3, 16}, {4, 0, 16}, {15, 5, 32}, {4100, 0, 4112},
		{65535, 5, 65552}, {65536, 8, 65536 + 32}, {70000, 8, 65536 + 4496},
		{131048, 0, 2 * 65536},
	} {
		if c.n <= MaxDataLen {
			if got := PaddingLen(c.n); got != c.pad {
				t.Errorf("PaddingLen(%d) = %d, want %d", c.n, got, c.pad)
			}
		}
		if got := SealedLen(c.n); got != c.sealed {
			t.Errorf("SealedLen(%d) = %d, want %d", c.n, got, c.sealed)
		}
		s := NewSealer([16]byte{}, [16]byte{}, [16]byte{})
		if got := len(s.AppendMessage(nil, make([]byte, c.n))); got != c.sealed {
			t.Errorf("len(AppendMessage(%d bytes)) = %d, want %d", c.n, got, c.sealed)
		}
	}
	if MaxPacketLen != 65792 {
		t.Errorf("MaxPacketLen = %d, want 65792", MaxPacketLen)
	}
}

// TestRecordStreamsEncode rebuilds every record.json stream byte for byte.
func TestRecordStreamsEncode(t *testing.T) {
	var f recordFile
	loadJSON(t, "record.json", &f)
	for _, st := range f.Streams {
		t.Run(st.Name, func(t *testing.T) {
			key := DeriveKey(st.Key)
			if hex.EncodeToString(key[:]) != st.AESKeyHex {
				t.Fatalf("key mismatch")
			}
			s := NewSealer(key, unhex16(t, st.IVHex), unhex16(t, st.SyncPlainHex))
			if got := hex.EncodeToString(s.Sync()); got != st.SyncCipherHex {
				t.Fatalf("sync = %s, want %s", got, st.SyncCipherHex)
			}
			stream := s.Sync()
			for ci, call := range st.Calls {
				var want []byte
				var pkts []recordPacket
				for _, p := range st.Packets {
					if p.FromCall == ci {
						want = append(want, unhex(t, p.CiphertextHex)...)
						pkts = append(pkts, p)
					}
				}
				if len(pkts) != call.Packets {
					t.Fatalf("call %d: %d packets in vector, call says %d", ci, len(pkts), call.Packets)
				}
				if pkts[0].StreamOffset != len(stream) {
					t.Fatalf("call %d: offset %d, want %d", ci, len(stream), pkts[0].StreamOffset)
				}
				var got []byte
				var err error
				switch call.Call {
				case "send_packet":
					got = s.AppendMessage(nil, ruleBytes(call.MessageLen, call.MessageSeed))
				case "nodata":
					got, err = s.AppendNodata(nil, unhex(t, call.PaddingHex))
				case "close":
					got = s.AppendClose(nil, unhex4(t, pkts[0].PaddingHex))
				case "reset":
					got = s.AppendReset(nil, unhex4(t, pkts[0].PaddingHex))
				default:
					t.Fatalf("unknown call %q", call.Call)
				}
				if err != nil {
					t.Fatalf("call %d: %v", ci, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("call %d (%s): ciphertext mismatch", ci, call.Call)
				}
				stream = append(stream, got...)
			}
			if len(stream) != st.StreamLen || sha(stream) != st.StreamSHA {
				t.Fatalf("stream len %d sha %s, want %d %s", len(stream), sha(stream), st.StreamLen, st.StreamSHA)
			}
		})
	}
}

// recordStream joins the sync block and the packets' ciphertexts.
func recordStream(t *testing.T, syncHex string, pkts []recordPacket) []byte {
	stream := unhex(t, syncHex)
	for _, p := range pkts {
		stream = append(stream, unhex(t, p.CiphertextHex)...)
	}
	return stream
}

// TestRecordStreamsDecode decodes every record.json stream under several
// chunkings and checks what the original receiver made of it.
func TestRecordStreamsDecode(t *testing.T) {
	var f recordFile
	loadJSON(t, "record.json", &f)
	for _, st := range f.Streams {
		stream := recordStream(t, st.SyncCipherHex, st.Packets)
		if sha(stream) != st.StreamSHA {
			t.Fatalf("%s: vector stream sha mismatch", st.Name)
		}
		for cname, mk := range chunkings() {
			t.Run(st.Name+"/"+cname, func(t *testing.T) {
				d := decodeChunks(DeriveKey(st.Key), stream, mk())
				rv := st.Receiver
				if len(d.msgs) != len(rv.Delivered) {
					t.Fatalf("delivered %d messages, want %d (err %v)", len(d.msgs), len(rv.Delivered), d.err)
				}
				for i, m := range d.msgs {
					if len(m) != rv.Delivered[i].Len || sha(m) != rv.Delivered[i].SHA256 {
						t.Errorf("message %d: len %d sha %s, want %d %s", i, len(m), sha(m), rv.Delivered[i].Len, rv.Delivered[i].SHA256)
					}
				}
				if d.secure != rv.SecureClosed {
					t.Errorf("secure_closed = %v, want %v", d.secure, rv.SecureClosed)
				}
				checkErrClass(t, d.err, rv.Error)
				if d.phase != rv.ErrorPhase {
					t.Errorf("error phase %s, want %s", d.phase, rv.ErrorPhase)
				}
			})
		}
	}
}

// TestRecordPlaintextLayout checks every vector packet's plaintext
// fields against a decryption of its ciphertext.
func TestRecordPlaintextLayout(t *testing.T) {
	var f recordFile
	loadJSON(t, "record.json", &f)
	for _, st := range f.Streams {
		plain := cbcDecrypt(t, DeriveKey(st.Key), recordStream(t, st.SyncCipherHex, st.Packets))
		for i, p := range st.Packets {
			pt := plain[p.StreamOffset-BlockSize : p.StreamOffset-BlockSize+p.PlaintextLen]
			if sha(pt) != p.PlaintextSHA {
				t.Errorf("%s packet %d: plaintext sha mismatch", st.Name, i)
			}
			if p.PlaintextHex != nil && hex.EncodeToString(pt) != *p.PlaintextHex {
				t.Errorf("%s packet %d: plaintext mismatch", st.Name, i)
			}
			hdr := fmt.Sprintf("%04x%02x%02x", p.DataLen, p.PaddingLen, p.Type)
			if hex.EncodeToString(pt[:4]) != p.HeaderHex || hdr != p.HeaderHex {
				t.Errorf("%s packet %d: header mismatch", st.Name, i)
			}
			if PacketType(p.Type).String() != p.TypeName {
				t.Errorf("%s packet %d: type name %s, want %s", st.Name, i, PacketType(p.Type), p.TypeName)
			}
			d := digest(pt[:len(pt)-DigestLen])
			if hex.EncodeToString(d[:]) != p.DigestHex {
				t.Errorf("%s packet %d: digest mismatch", st.Name, i)
			}
		}
	}
}

// cbcDecrypt decrypts a whole stream with the "IV = first block" view.
func cbcDecrypt(t *testing.T, key [16]byte, stream []byte) []byte {
	t.Helper()
	b := newBlock(key)
	out := make([]byte, 0, len(stream))
	prev := stream[:16]
	for i := 16; i+16 <= len(stream); i += 16 {
		var blk [16]byte
		b.Decrypt(blk[:], stream[i:i+16])
		for j := range blk {
			blk[j] ^= prev[j]
		}
		out = append(out, blk[:]...)
		prev = stream[i : i+16]
	}
	return out
}

func TestSealerLayoutErrors(t *testing.T) {
	s := NewSealer([16]byte{1}, [16]byte{2}, [16]byte{3})
	dst := []byte("keep")
	for _, c := range []struct {
		name string
		f    func() ([]byte, error)
	}{
		{"nodata P=5", func() ([]byte, error) { return s.AppendNodata(dst, make([]byte, 5)) }},
		{"nodata P=260", func() ([]byte, error) { return s.AppendNodata(dst, make([]byte, 260)) }},
		{"raw misaligned", func() ([]byte, error) { return s.AppendRaw(dst, PacketData, []byte{1}, nil) }},
		{"raw L too big", func() ([]byte, error) { return s.AppendRaw(dst, PacketPart, make([]byte, 65536), make([]byte, 4)) }},
		{"plain misaligned", func() ([]byte, error) { return s.AppendPlain(dst, make([]byte, 17)) }},
	} {
		got, err := c.f()
		if !errors.Is(err, ErrPacketLayout) || string(got) != "keep" {
			t.Errorf("%s: got %q, %v; want dst unchanged and ErrPacketLayout", c.name, got, err)
		}
	}
	// A failed call must not advance the chain: the next packet equals
	// one from a fresh sealer.
	fresh := NewSealer([16]byte{1}, [16]byte{2}, [16]byte{3})
	if !bytes.Equal(s.AppendMessage(nil, []byte("x")), fresh.AppendMessage(nil, []byte("x"))) {
		t.Error("failed append changed the CBC chain")
	}
}

type shortReader struct{}

func (shortReader) Read(p []byte) (int, error) { return 0, errors.New("no entropy") }

func TestRandomSealerRoundTrip(t *testing.T) {
	if _, err := NewRandomSealer([16]byte{}, shortReader{}); err == nil {
		t.Fatal("NewRandomSealer with a failing reader succeeded")
	}
	key := DeriveKey("round trip")
	s, err := NewRandomSealer(key, bytes.NewReader(bytes.Repeat([]byte{0xa5}, 16)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.Sync(), bytes.Repeat([]byte{0xa5}, 16)) {
		t.Fatal("Sync is not the random block")
	}
	stream := s.Sync()
	sizes := []int{0, 1, 15, 16, 4100, 65535, 65536, 200000, 3}
	for i, n := range sizes {
		stream = s.AppendMessage(stream, ruleBytes(n, i))
	}
	stream = s.AppendClose(stream, [4]byte{1, 2, 3, 4})
	d := decodeChunks(key, stream, randomChunks(3)())
	if len(d.msgs) != len(sizes) {
		t.Fatalf("got %d messages, want %d", len(d.msgs), len(sizes))
	}
	for i, n := range sizes {
		if !bytes.Equal(d.msgs[i], ruleBytes(n, i)) {
			t.Errorf("message %d differs", i)
		}
	}
	if !errors.Is(d.err, ErrConnectionClosed) || d.closes != 1 {
		t.Errorf("end: %v, %d closes", d.err, d.closes)
	}
}

// TestOpenerMessageCap checks the deliberate MaxMessageSize limit.
func TestOpenerMessageCap(t *testing.T) {
	key := DeriveKey("cap")
	s := NewSealer(key, [16]byte{}, [16]byte{})
	o := NewOpener(key)
	o.Feed(s.Sync())
	part := make([]byte, PartLen)
	var parts int
	for ; parts*PartLen+PartLen <= MaxMessageSize; parts++ {
		ct, _ := s.AppendRaw(nil, PacketPart, part, nil)
		o.Feed(ct)
		if _, err := o.Next(); !errors.Is(err, ErrNeedMore) {
			t.Fatalf("part %d: %v", parts, err)
		}
	}
	ct, _ := s.AppendRaw(nil, PacketPart, part, nil)
	o.Feed(ct[:BlockSize]) // the header alone triggers the check
	_, err := o.Next()
	if !errors.Is(err, ErrMessageTooLarge) || !errors.Is(err, ErrInvalidHeader) || !NeedsReset(err) {
		t.Fatalf("after %d parts: %v, want ErrMessageTooLarge", parts, err)
	}
	if _, err2 := o.Next(); err2 != err || o.EOF() != err {
		t.Fatal("error is not sticky")
	}
}

// TestSteadyStateAllocs checks that sealing into a buffer with room and
// opening a stream of single-packet messages do not allocate.
func TestSteadyStateAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation allocates")
	}
	key := DeriveKey("allocs")
	s := NewSealer(key, [16]byte{}, [16]byte{})
	o := NewOpener(key)
	o.Feed(s.Sync())
	msg := ruleBytes(4100, 1)
	buf := make([]byte, 0, 3*SealedLen(len(msg)))
	round := func() {
		buf = s.AppendMessage(buf[:0], msg)
		buf = s.AppendMessage(buf, msg[:10])
		o.Feed(buf)
		for {
			_, err := o.Next()
			if err != nil {
				if !errors.Is(err, ErrNeedMore) {
					t.Fatal(err)
				}
				return
			}
		}
	}
	round() // warm up the Opener's buffer
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Errorf("%v allocations per round, want 0", n)
	}
}
