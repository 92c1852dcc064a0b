package wire

import (
	"bytes"
	"errors"
	"testing"
)

// Native fuzz targets, seeded from the tables of the other test files.
//
//	go test ./wire/ -run '^$' -fuzz '^FuzzParseFrame$' -fuzztime 15s

func FuzzParseFrame(f *testing.F) {
	for _, tc := range frameCases {
		if len(tc.hex) < 4096 {
			f.Add(unhex(f, tc.hex))
		}
	}
	for _, s := range []string{"", "00", "000100010001", "0100000100020001", "050000000000010203040506070809", "ff0000010000", "070000000000"} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, pad, err := ParseFrame(body)
		_ = fr.String()
		_ = fr.Flags.String()
		if err != nil {
			if !errors.Is(err, ErrShortFrame) && !errors.Is(err, ErrBadPadding) && !errors.Is(err, ErrUnknownFrame) && !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error outside the frame sentinels: %v", err)
			}
			return
		}
		if pad < 0 || FrameHeaderLen+len(fr.Payload)+pad != len(body) {
			t.Fatalf("payload %d + pad %d + header != %d", len(fr.Payload), pad, len(body))
		}
		// Re-encoding gives the same bytes, up to the padding content,
		// which the receiver ignores and the encoder writes as zeros.
		enc := AppendFrame(nil, &fr, pad)
		n := len(body) - pad
		if len(enc) != len(body) || !bytes.Equal(enc[:n], body[:n]) {
			t.Fatalf("re-encoded %x, parsed from %x", enc, body)
		}
		if !bytes.Equal(enc[n:], make([]byte, pad)) {
			t.Fatalf("padding not zero: %x", enc[n:])
		}
		fr2, pad2, err := ParseFrame(enc)
		if err != nil || !frameEqual(fr, fr2) || pad2 != pad {
			t.Fatalf("re-encoded frame parses as %v pad %d err %v", fr2, pad2, err)
		}
		if fr.Type == FrameWindow {
			_ = WindowCredit(&fr)
		}
	})
}

// fuzzOpenSeeds are records sealed under testKey with ChaCha20-Poly1305:
// the only inputs for which FuzzOpen may see a body.
func fuzzOpenSeeds(t testing.TB) (stream []byte, records [][]byte, bodies [][]byte) {
	s, _ := pair(t, CipherChaCha20Poly1305, &testKey)
	for i, tc := range frameCases[:8] {
		rec, err := s.SealFrame(nil, &tc.f, i)
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, rec)
		bodies = append(bodies, AppendFrame(nil, &tc.f, i))
		stream = append(stream, rec...)
	}
	return stream, records, bodies
}

func FuzzOpen(f *testing.F) {
	stream, records, bodies := fuzzOpenSeeds(f)
	f.Add(stream, uint8(0))
	f.Add(stream, uint8(1))
	f.Add(stream, uint8(17))
	f.Add(stream[:len(records[0])], uint8(3))
	f.Add(stream[:len(stream)-1], uint8(0))
	f.Add(records[1], uint8(0))
	mut := bytes.Clone(stream)
	mut[len(records[0])+3] ^= 4
	f.Add(mut, uint8(5))
	f.Add([]byte{}, uint8(0))
	f.Add(make([]byte, 100), uint8(0))
	f.Add(bytes.Repeat([]byte{0xff}, LengthBoxSize), uint8(0))

	aead := newAEAD(f, CipherChaCha20Poly1305, &testKey)
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		o := NewOpener(aead)
		var buf []byte
		consumed := 0 // bytes of in that records took
		opened := 0
		rest := in
		for {
			if len(rest) > 0 {
				n := len(rest)
				if chunk > 0 {
					n = min(int(chunk), n)
				}
				buf = append(buf, rest[:n]...)
				rest = rest[n:]
			}
			body, n, err := o.Open(nil, buf)
			if err != nil {
				if !errors.Is(err, ErrAuth) {
					t.Fatalf("Open error %v, want ErrAuth", err)
				}
				if _, _, err2 := o.Open(nil, stream); !errors.Is(err2, ErrAuth) {
					t.Fatalf("not sticky: %v", err2)
				}
				return
			}
			if n == 0 {
				if len(rest) == 0 {
					return
				}
				continue
			}
			// A body came out: the bytes that made it must be exactly the
			// next record we sealed, and the body exactly its frame.
			if opened >= len(records) || !bytes.Equal(in[consumed:consumed+n], records[opened]) || !bytes.Equal(body, bodies[opened]) {
				t.Fatalf("Open returned a body for bytes that were not sealed: record %d, %x", opened, in[consumed:consumed+n])
			}
			consumed += n
			opened++
			buf = buf[n:]
		}
	})
}

// fuzzPSK and fuzzSaltC fix the hello fuzzers' keys.
var (
	fuzzPSK   = PSK{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	fuzzSaltC = [SaltSize]byte{0xc0, 0xc1, 0xc2}
)

func fuzzHellos() (client, server [][]byte) {
	for i, pad := range []int{0, 1, 16, 300} {
		ch := ClientHello{Time: uint64(i), Cipher: CipherID(1 + i%2), PadLen: pad}
		ch.Salt[0] = byte(i)
		ch.Public[5] = byte(i)
		client = append(client, AppendClientHello(nil, &fuzzPSK, &ch))
		sh := ServerHello{Time: uint64(i), ClientSalt: fuzzSaltC, PadLen: pad}
		sh.Salt[1] = byte(i)
		sh.Public[7] = byte(i)
		server = append(server, AppendServerHello(nil, &fuzzPSK, &sh))
	}
	return client, server
}

func FuzzClientHello(f *testing.F) {
	client, server := fuzzHellos()
	for _, c := range client {
		f.Add(c)
		f.Add(c[:ClientPrefixLen])
	}
	for _, s := range server {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add(make([]byte, ClientPrefixLen))
	f.Fuzz(func(t *testing.T, in []byte) {
		// The whole input as a prefix: only the exact length may succeed.
		if _, err := NewClientHelloReader(&fuzzPSK).OpenPrefix(in); err != nil && !errors.Is(err, ErrHandshake) {
			t.Fatalf("OpenPrefix: %v", err)
		}
		// Prefix then rest, as a server reads.
		r := NewClientHelloReader(&fuzzPSK)
		if _, err := r.OpenRest(in); !errors.Is(err, ErrHandshake) {
			t.Fatalf("OpenRest before OpenPrefix: %v", err)
		}
		if len(in) < ClientPrefixLen {
			return
		}
		rest, err := r.OpenPrefix(in[:ClientPrefixLen])
		if err != nil {
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("OpenPrefix: %v", err)
			}
			return
		}
		if rest < clientVarMin+TagSize || rest > clientVarMin+MaxHandshakePad+TagSize {
			t.Fatalf("OpenPrefix accepted rest %d", rest)
		}
		h, err := r.OpenRest(in[ClientPrefixLen:])
		if err != nil {
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("OpenRest: %v", err)
			}
			return
		}
		// Accepted: it must be a flight we built.
		if got := AppendClientHello(nil, &fuzzPSK, h); !bytes.Equal(got, in) {
			t.Fatalf("accepted a flight that was not sealed: %x", in)
		}
	})
}

func FuzzServerHello(f *testing.F) {
	client, server := fuzzHellos()
	for _, s := range server {
		f.Add(s)
		f.Add(s[:ServerPrefixLen])
	}
	for _, c := range client {
		f.Add(c)
	}
	f.Add([]byte{})
	f.Add(make([]byte, ServerPrefixLen))
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := NewServerHelloReader(&fuzzPSK, fuzzSaltC).OpenPrefix(in); err != nil && !errors.Is(err, ErrHandshake) {
			t.Fatalf("OpenPrefix: %v", err)
		}
		r := NewServerHelloReader(&fuzzPSK, fuzzSaltC)
		if _, err := r.OpenRest(in); !errors.Is(err, ErrHandshake) {
			t.Fatalf("OpenRest before OpenPrefix: %v", err)
		}
		if len(in) < ServerPrefixLen {
			return
		}
		rest, err := r.OpenPrefix(in[:ServerPrefixLen])
		if err != nil {
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("OpenPrefix: %v", err)
			}
			return
		}
		if rest < serverVarMin+TagSize || rest > serverVarMin+MaxHandshakePad+TagSize {
			t.Fatalf("OpenPrefix accepted rest %d", rest)
		}
		h, err := r.OpenRest(in[ServerPrefixLen:])
		if err != nil {
			if !errors.Is(err, ErrHandshake) {
				t.Fatalf("OpenRest: %v", err)
			}
			return
		}
		if h.ClientSalt != fuzzSaltC {
			t.Fatalf("accepted a reply to another salt")
		}
		if got := AppendServerHello(nil, &fuzzPSK, h); !bytes.Equal(got, in) {
			t.Fatalf("accepted a flight that was not sealed: %x", in)
		}
	})
}

func FuzzRecordRoundTrip(f *testing.F) {
	for i, tc := range frameCases {
		if len(tc.f.Payload) < 1024 && tc.padLen < 1024 {
			f.Add(uint8(tc.f.Type), uint8(tc.f.Flags), tc.f.Stream, tc.f.Payload, uint16(tc.padLen), uint8(i))
		}
	}
	f.Add(uint8(FramePad), uint8(0), uint16(0), []byte{}, uint16(MaxBodyLen-FrameHeaderLen), uint8(1))
	f.Add(uint8(FrameStream), uint8(FlagDAT), uint16(1), []byte{1}, uint16(MaxBodyLen-FrameHeaderLen), uint8(0))
	f.Add(uint8(200), uint8(0xff), uint16(0xffff), []byte("x"), uint16(0), uint8(2))
	f.Fuzz(func(t *testing.T, typ, flags uint8, stream uint16, payload []byte, padLen uint16, c uint8) {
		cid := ciphers[int(c)%len(ciphers)]
		s, o := pair(t, cid, &testKey)
		fr := Frame{Type: FrameType(typ), Flags: Flags(flags), Stream: stream, Payload: payload}
		s2, _ := pair(t, cid, &testKey)
		body := AppendFrame(nil, &fr, int(padLen))
		rec, err := s.SealFrame(nil, &fr, int(padLen))
		if len(body) > MaxBodyLen {
			if err == nil {
				t.Fatalf("sealed a %d-byte body", len(body))
			}
			// Not sticky: a small frame still goes through.
			fr = Frame{Type: FramePad}
			body = AppendFrame(nil, &fr, 0)
			rec, err = s.SealFrame(nil, &fr, 0)
		}
		if err != nil {
			t.Fatalf("SealFrame: %v", err)
		}
		if want, _ := s2.Seal(nil, body); !bytes.Equal(rec, want) {
			t.Fatal("SealFrame differs from Seal(AppendFrame)")
		}
		// A second record checks that both counters moved in step.
		tail := Frame{Type: FramePing, Payload: []byte{byte(c)}}
		rec, err = s.SealFrame(rec, &tail, int(c))
		if err != nil {
			t.Fatal(err)
		}
		got := openAll(t, o, rec, func() int { return 1 + int(c) })
		if len(got) != 2 || !bytes.Equal(got[0], body) {
			t.Fatalf("opened %d records", len(got))
		}
		if g, _, err := ParseFrame(got[1]); err != nil || !frameEqual(g, tail) {
			t.Fatalf("second record: %v %v", g, err)
		}
		// If the frame is valid it comes back equal.
		want, wantPad, werr := ParseFrame(body)
		g, gotPad, gerr := ParseFrame(got[0])
		if (werr == nil) != (gerr == nil) || (gerr == nil && (!frameEqual(g, want) || gotPad != wantPad)) {
			t.Fatalf("frame changed in transit: %v/%v vs %v/%v", g, gerr, want, werr)
		}
		if gerr == nil && !frameEqual(g, fr) {
			t.Fatalf("parsed %v, sealed %v", g, fr)
		}
	})
}
