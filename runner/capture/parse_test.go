package capture

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"usocks/wire"
)

// TestEventRoundTrip: every layer formats and parses back.
func TestEventRoundTrip(t *testing.T) {
	evs := []Event{
		{T: 1234567 * time.Microsecond, Session: 3, Layer: LayerOpen, Peer: "[::1]:4194"},
		{Session: 1, Dir: DirIn, Layer: LayerHandshake, N: 3, Data: []byte{1, 2, 3}},
		{Session: 1, Layer: LayerKeys, Cipher: "aes-256-gcm", C2S: make([]byte, 32), S2C: bytes.Repeat([]byte{9}, 32)},
		{Session: 1, Dir: DirOut, Layer: LayerBackend, N: 2, Data: []byte{0xff, 0}},
		{Session: 1, Dir: DirOut, Layer: LayerFrame, Frame: Frame{Type: wire.FrameStream, Flags: wire.FlagSYN | wire.FlagDAT | 0x40, Stream: 7, Len: 2, Pad: 3}, Data: []byte("hi")},
		{Session: 1, Dir: DirIn, Layer: LayerFrame, Frame: Frame{Type: wire.FrameType(200), Stream: 0}},
		{Session: 1, Dir: DirIn, Layer: LayerEOF, Err: `read tcp: "quoted" \ err`},
		{Session: 1, Dir: DirOut, Layer: LayerEOF},
		{Session: 1, Layer: LayerDrop, N: 17},
		{Session: 4, Layer: LayerLink, Of: 2, N: 3},
		{Session: 1, Layer: LayerEnd, Result: "error", Err: "record authentication failed"},
		{Layer: LayerClose, Events: 10, Dropped: 17},
	}
	for _, e := range evs {
		line := string(e.AppendLine(nil))
		got, err := ParseEvent(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if again := string(got.AppendLine(nil)); again != line {
			t.Fatalf("round trip:\n%s\n%s", line, again)
		}
	}
}

// TestParseEventErrors: every layer's parser refuses what it must, with
// a message naming the problem.
func TestParseEventErrors(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"0.000001 1 in", "too few fields"},
		{"0.1 1 in eof", `time "0.1"`},
		{"x.000001 1 in eof", "six decimals"},
		{"0.000001 s in eof", `session "s"`},
		{"0.000001 1 up eof", `direction "up"`},
		{"0.000001 1 in  ", "empty layer"},
		{"0.000001 1 in eof err", `"err" is not key=value`},
		{`0.000001 1 in eof err="a`, "bad quoted string"},
		{`0.000001 1 in eof err="a"b`, "junk after quoted string"},
		{"0.000001 1 - eof", "eof event with direction -"},
		{"0.000001 2 - link n=2", "link event without of="},
		{"0.000001 2 - link of=1 n=1", "a link of a resumed session is 2 or more"},
		{"0.000001 2 - link of=x n=2", `of="x"`},
		{"0.000001 1 - backend n=1 hex=00", "backend event with direction -"},
		{"0.000001 1 in hs hex=00", "hs event without n="},
		{"0.000001 1 in backend n=2 hex=00", "n=2 but hex= holds 1 bytes"},
		{"0.000001 1 in backend n=0 hex=", "backend event of 0 bytes"},
		{"0.000001 1 in backend n=1 hex=zz", "bad hex"},
		{"0.000001 1 in backend n=-1 hex=00", "want a number"},
		{"0.000001 1 - keys c2s=00 s2c=00", "keys event without cipher="},
		{"0.000001 1 - keys cipher=x c2s=00 s2c=00", "keys of 1 and 1 bytes"},
		{"0.000001 1 in frame stream=1 flags=- len=0 pad=0", "frame event without type="},
		{"0.000001 1 in frame type=NOPE stream=1 flags=- len=0 pad=0", `frame type "NOPE"`},
		{"0.000001 1 in frame type=STREAM stream=65536 flags=- len=0 pad=0", "stream="},
		{"0.000001 1 in frame type=STREAM stream=1 flags=SYN|XYZ len=0 pad=0", "flags"},
		{"0.000001 1 in frame type=STREAM stream=1 flags=- len=1 pad=0 data=0000", "len=1 but data= holds 2 bytes"},
		{"0.000001 1 in frame type=STREAM stream=1 flags=- len=0 pad=70000", "pad="},
		{"0.000001 1 - drop", "drop event without n="},
		{"0.000001 1 - end", "end event without result="},
		{"0.000001 1 - end result=maybe", "want clean or error"},
		{"0.000001 0 - close events=1", "close event without dropped="},
	} {
		_, err := ParseEvent(c.line)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want one mentioning %q", c.line, err, c.want)
		}
	}
	// Unknown layers and keys are skipped, as the format promises.
	for _, line := range []string{"0.000001 1 - future x=1", "0.000001 1 in eof new=field", "0.000001 1 - open"} {
		if _, err := ParseEvent(line); err != nil {
			t.Errorf("%q: %v", line, err)
		}
	}
}

func TestParseHeaderErrors(t *testing.T) {
	_, err := ParseHeader("GET / HTTP/1.1")
	if !errors.Is(err, ErrNotCapture) {
		t.Fatal(err)
	}
}

// FuzzParseEvent: the line parser never panics, and what it
// accepts formats back to a line it parses the same way.
func FuzzParseEvent(f *testing.F) {
	for _, name := range []string{"v2-plaintext.capture", "v1.capture"} {
		raw, err := os.ReadFile(filepath.Join(capturesDir, name))
		if err != nil {
			f.Fatal(err)
		}
		for i, l := range strings.Split(string(raw), "\n") {
			if i > 0 && i < 40 && len(l) < 4096 {
				f.Add(l)
			}
		}
	}
	f.Add(`0.000001 1 in eof err="a \"b\" c"`)
	f.Add(`1.000000 2 out frame type=TYPE(200) stream=9 flags=SYN|0x40 len=0 pad=0`)
	f.Fuzz(func(t *testing.T, line string) {
		e, err := ParseEvent(line)
		if err != nil {
			return
		}
		again := string(e.AppendLine(nil))
		e2, err := ParseEvent(again)
		if err != nil {
			t.Fatalf("reformatted %q as %q, which does not parse: %v", line, again, err)
		}
		if third := string(e2.AppendLine(nil)); third != again {
			t.Fatalf("not stable: %q then %q", again, third)
		}
	})
}
