package wire

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// sealStream seals frames (with padLen padding each) as one direction's
// byte stream. A KEYUPDATE frame is sealed by Sealer.SealKeyUpdate, which
// moves the sealer to the next key of the chain that starts at key, as
// the encrypt stage does.
func sealStream(t testing.TB, c CipherID, key [KeySize]byte, frames []Frame, padLen func(i int) int) []byte {
	t.Helper()
	s, err := NewSealerKey(c, &key)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for i := range frames {
		if frames[i].Type == FrameKeyUpdate {
			out, err = s.SealKeyUpdate(out, frames[i].Payload)
		} else {
			out, err = s.SealFrame(out, &frames[i], padLen(i))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// readerOf returns a RecordReader of key's chain that follows KEYUPDATEs.
func readerOf(t testing.TB, c CipherID, key [KeySize]byte) *RecordReader {
	t.Helper()
	o, err := NewOpenerKey(c, &key)
	if err != nil {
		t.Fatal(err)
	}
	return NewRecordReader(o, 64)
}

// readChunks feeds stream to r in chunks of the sizes cut gives and
// returns every frame opened (as strings, payload and padding included),
// and the first error.
func readChunks(r *RecordReader, stream []byte, cut func() int) ([]string, error) {
	return readChunksBorrow(r, stream, cut, false)
}

// readChunksBorrow is readChunks with Borrow instead of Feed when borrow
// is set: each chunk is a copy that is overwritten once returned, so a
// reader that kept reading it would open garbage.
func readChunksBorrow(r *RecordReader, stream []byte, cut func() int, borrow bool) ([]string, error) {
	var got []string
	var chunk []byte
	defer func() { r.Return() }()
	for len(stream) > 0 {
		n := min(max(cut(), 1), len(stream))
		if borrow {
			r.Return()
			clear(chunk)
			chunk = append([]byte(nil), stream[:n]...)
			r.Borrow(chunk)
		} else {
			r.Feed(stream[:n])
		}
		stream = stream[n:]
		for {
			f, pad, ok, err := r.Next(nil)
			if ok {
				got = append(got, fmt.Sprintf("%v pad=%d payload=%x", f, pad, f.Payload))
			}
			if err != nil {
				return got, err
			}
			if !ok {
				break
			}
		}
	}
	return got, nil
}

func testFrames() []Frame {
	return []Frame{
		{Type: FrameStream, Flags: FlagSYN, Stream: 1},
		{Type: FrameStream, Flags: FlagDAT, Stream: 1, Payload: bytes.Repeat([]byte("ab"), 700)},
		{Type: FramePad},
		{Type: FrameKeyUpdate, Payload: bytes.Repeat([]byte{7}, SaltSize)},
		{Type: FrameWindow, Stream: 1, Payload: []byte{0, 1, 0, 0}},
		{Type: FrameStream, Flags: FlagDAT | FlagFIN, Stream: 1, Payload: []byte("end")},
		{Type: FrameClose},
	}
}

// TestRecordReaderEverySplit: the frames come out the same whatever the
// chunking: one chunk, every two-chunk split, one byte at a time, and
// chunk sizes around the record sizes.
func TestRecordReaderEverySplit(t *testing.T) {
	for _, c := range ciphers {
		stream := sealStream(t, c, testKey, testFrames(), func(i int) int { return 3 * i })
		want, err := readChunks(readerOf(t, c, testKey), stream, func() int { return len(stream) })
		if err != nil || len(want) != len(testFrames()) {
			t.Fatalf("%s: one chunk: %d frames, %v", c, len(want), err)
		}
		check := func(name string, cut func() int) {
			t.Helper()
			for _, borrow := range []bool{false, true} {
				r := readerOf(t, c, testKey)
				got, err := readChunksBorrow(r, stream, cut, borrow)
				if err != nil || fmt.Sprint(got) != fmt.Sprint(want) || r.Buffered() != 0 {
					t.Fatalf("%s %s (borrow %v): %v, %d left over\ngot  %v\nwant %v", c, name, borrow, err, r.Buffered(), got, want)
				}
			}
		}
		for i := 1; i < len(stream); i++ {
			first := true
			check(fmt.Sprintf("split at %d", i), func() int {
				if first {
					first = false
					return i
				}
				return len(stream)
			})
		}
		for _, size := range []int{1, 2, LengthBoxSize - 1, LengthBoxSize, LengthBoxSize + 1, 37, 1500, 4096} {
			check(fmt.Sprintf("chunks of %d", size), func() int { return size })
		}
	}
}

// TestRecordReaderErrors: what ends reading, and that it stays ended.
func TestRecordReaderErrors(t *testing.T) {
	c := CipherAES256GCM
	for _, tc := range []struct {
		name   string
		stream func() []byte
		rekey  bool
		want   error
		frames int // opened before the error
	}{
		{"flipped bit", func() []byte {
			s := sealStream(t, c, testKey, testFrames()[:2], func(int) int { return 0 })
			s[len(s)-1] ^= 1
			return s
		}, true, ErrAuth, 1},
		{"wrong key", func() []byte {
			return sealStream(t, c, [KeySize]byte{1}, testFrames()[:1], func(int) int { return 0 })
		}, true, ErrAuth, 0},
		{"KEYUPDATE without Rekey", func() []byte {
			return sealStream(t, c, testKey, testFrames()[2:5], func(int) int { return 0 })
		}, false, ErrUnexpectedKeyUpdate, 2},
		{"malformed frame", func() []byte {
			return sealStream(t, c, testKey, []Frame{{Type: FrameStream, Stream: 0, Flags: FlagSYN}}, func(int) int { return 0 })
		}, true, ErrBadFrame, 0},
		{"unknown frame type", func() []byte {
			return sealStream(t, c, testKey, []Frame{{Type: 200}}, func(int) int { return 0 })
		}, true, ErrUnknownFrame, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := readerOf(t, c, testKey)
			if !tc.rekey {
				key := testKey
				a, _ := NewAEAD(c, &key)
				r = NewRecordReader(NewOpener(a), 64) // holds no key: cannot rekey
			}
			got, err := readChunks(r, tc.stream(), func() int { return 5 })
			if !errors.Is(err, tc.want) || len(got) != tc.frames {
				t.Fatalf("%d frames, err %v; want %d frames, %v", len(got), err, tc.frames, tc.want)
			}
			if tc.want != ErrAuth && !errors.Is(err, ErrProtocol) {
				t.Fatalf("%v is not a protocol error", err)
			}
			if _, _, ok, err2 := r.Next(nil); ok || err2 == nil {
				t.Fatal("the reader goes on after an error")
			}
		})
	}
	// Cut inside a record: nothing opened, the bytes stay buffered.
	s := sealStream(t, c, testKey, testFrames()[:2], func(int) int { return 0 })
	r := readerOf(t, c, testKey)
	got, err := readChunks(r, s[:len(s)-1], func() int { return 100 })
	if err != nil || len(got) != 1 || r.Buffered() == 0 {
		t.Fatalf("cut stream: %d frames, %v, %d buffered", len(got), err, r.Buffered())
	}
}

// FuzzRecordReader: frames sealed from the fuzzer's bytes (with padding
// and a KEYUPDATE) come out the same for any chunking as for one chunk;
// and the fuzzer's bytes read as ciphertext never panic and never open.
func FuzzRecordReader(f *testing.F) {
	f.Add([]byte("hello, world"), []byte{1, 2, 3}, uint8(0))
	f.Add(bytes.Repeat([]byte{0xaa}, 3000), []byte{200, 17}, uint8(5))
	f.Add([]byte{}, []byte{}, uint8(1))
	f.Fuzz(func(t *testing.T, data, cuts []byte, seed uint8) {
		c := ciphers[int(seed)%len(ciphers)]
		// Frames: data cut into payloads of sizes drawn from cuts, a PAD
		// and a KEYUPDATE in the middle.
		var frames []Frame
		rest := data
		for i := 0; len(rest) > 0 && i < 64; i++ {
			n := min(len(rest), 1+int(at(cuts, i))*37)
			frames = append(frames, Frame{Type: FrameStream, Flags: FlagDAT, Stream: 1 + uint16(i), Payload: rest[:n]})
			rest = rest[n:]
			if i == 1 {
				salt := bytes.Repeat([]byte{seed}, SaltSize)
				frames = append(frames, Frame{Type: FramePad}, Frame{Type: FrameKeyUpdate, Payload: salt})
			}
		}
		stream := sealStream(t, c, testKey, frames, func(i int) int { return int(at(cuts, i+1)) })
		want, err := readChunks(readerOf(t, c, testKey), stream, func() int { return len(stream) })
		if err != nil || len(want) != len(frames) {
			t.Fatalf("one chunk: %d of %d frames, %v", len(want), len(frames), err)
		}
		i := 0
		cut := func() int { i++; return int(at(cuts, i)) }
		if got, err := readChunks(readerOf(t, c, testKey), stream, cut); err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("chunked: %v\ngot  %v\nwant %v", err, got, want)
		}
		i = 0
		if got, err := readChunksBorrow(readerOf(t, c, testKey), stream, cut, true); err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("chunked, borrowed: %v\ngot  %v\nwant %v", err, got, want)
		}
		// Random bytes as ciphertext: no frame, and only ErrAuth.
		j := 0
		got, err := readChunks(readerOf(t, c, testKey), data, func() int { j++; return int(at(cuts, j)) })
		if len(got) != 0 || (err != nil && !errors.Is(err, ErrAuth)) {
			t.Fatalf("random bytes opened: %v, %v", got, err)
		}
	})
}

// at is b[i] cyclically, 0 for an empty b.
func at(b []byte, i int) byte {
	if len(b) == 0 {
		return 0
	}
	return b[i%len(b)]
}
