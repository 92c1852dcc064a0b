package wire

import (
	"encoding/hex"
	"errors"
	"testing"
)

// controlVectors are the CONTROL payloads of SPEC-v2.md §7c.
var controlVectors = []struct {
	name string
	c    Control
	hex  string
}{
	{"lanes", Control{Type: ControlLanes, Count: 4, Index: 2}, "01" + "04" + "02"},
	{"seq", Control{Type: ControlSeq, Seq: 0x1234}, "02" + "0000000000001234"},
	{"health", Control{Type: ControlHealth, Up: 3, Count: 4, Replaced: 7}, "03" + "03" + "04" + "00000007"},
	{"going away", Control{Type: ControlGoingAway, Index: 1, Reason: GoingAwayRotation}, "04" + "01" + "00"},
}

func TestControlVectors(t *testing.T) {
	for _, v := range controlVectors {
		t.Run(v.name, func(t *testing.T) {
			got := hex.EncodeToString(AppendControl(nil, v.c))
			if got != v.hex {
				t.Fatalf("AppendControl = %s, want %s", got, v.hex)
			}
			p, _ := hex.DecodeString(v.hex)
			c, known, err := ParseControl(p)
			if err != nil || !known || c != v.c {
				t.Fatalf("ParseControl = %+v %v %v, want %+v", c, known, err, v.c)
			}
			// Through the frame codec: a session frame on stream 0.
			f := ControlFrame(v.c)
			body := AppendFrame(nil, &f, 2)
			if want := "0a000000" + "0002" + v.hex + "0000"; hex.EncodeToString(body) != want {
				t.Fatalf("frame = %x, want %s", body, want)
			}
			pf, _, err := ParseFrame(body)
			if err != nil || pf.Type != FrameControl || hex.EncodeToString(pf.Payload) != v.hex {
				t.Fatalf("ParseFrame = %v %v", pf, err)
			}
			if s := pf.String(); s != "CONTROL "+v.c.String() {
				t.Fatalf("String = %q", s)
			}
		})
	}
}

func TestParseControlRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		hex   string
		known bool
		err   error
	}{
		{"empty", "", false, ErrBadFrame},
		{"type 0 ignored", "00", false, nil},
		{"unknown type ignored", "05" + "ffffffff", false, nil},
		{"unknown type 255 ignored", "ff", false, nil},
		{"lanes short", "0104", false, ErrBadFrame},
		{"lanes long", "01040000", false, ErrBadFrame},
		{"lanes count 0", "010000", false, ErrBadFrame},
		{"lanes count 17", "011100", false, ErrBadFrame},
		{"lanes index = count", "010404", false, ErrBadFrame},
		{"lanes max", "01100f", true, nil},
		{"seq short", "02" + "00000000000000", false, ErrBadFrame},
		{"health long", "03" + "00000000000000", false, ErrBadFrame},
		{"going away short", "0401", false, ErrBadFrame},
		{"going away unknown reason", "0401ff", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := hex.DecodeString(tc.hex)
			_, known, err := ParseControl(p)
			if known != tc.known || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("ParseControl(%s) = %v, %v; want %v, %v", tc.hex, known, err, tc.known, tc.err)
			}
		})
	}
}

func TestControlFrameChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Frame
		ok   bool
	}{
		{"ok", Frame{Type: FrameControl, Payload: []byte{9}}, true},
		{"empty", Frame{Type: FrameControl}, false},
		{"on a stream", Frame{Type: FrameControl, Stream: 1, Payload: []byte{2}}, false},
		{"too long", Frame{Type: FrameControl, Payload: make([]byte, ControlMaxLen+1)}, false},
		{"longest", Frame{Type: FrameControl, Payload: make([]byte, ControlMaxLen)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseFrame(AppendFrame(nil, &tc.f, 0))
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadFrame)) {
				t.Fatalf("ParseFrame: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// FuzzParseControl: any payload decodes to an error, an ignored unknown
// message, or a message that encodes back to the same bytes.
//
//	go test ./wire/ -run '^$' -fuzz '^FuzzParseControl$' -fuzztime 10s
func FuzzParseControl(f *testing.F) {
	for _, v := range controlVectors {
		p, _ := hex.DecodeString(v.hex)
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add([]byte{7, 1, 2})
	f.Fuzz(func(t *testing.T, p []byte) {
		c, known, err := ParseControl(p)
		if err != nil {
			if known || !errors.Is(err, ErrBadFrame) {
				t.Fatalf("error %v with known=%v", err, known)
			}
			return
		}
		if !known {
			if len(p) == 0 || (p[0] != 0 && int(p[0]) < len(controlBodyLen)) {
				t.Fatalf("known type %d reported unknown", p[0])
			}
			return
		}
		if back := AppendControl(nil, c); string(back) != string(p) {
			t.Fatalf("round trip %x → %+v → %x", p, c, back)
		}
		if c.Type == ControlLanes && (c.Count == 0 || c.Count > MaxLanes || c.Index >= c.Count) {
			t.Fatalf("bad LANES accepted: %+v", c)
		}
	})
}
