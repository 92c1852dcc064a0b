package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// frameCase is one row of the codec table: a frame, its padding and its exact
// encoding.
type frameCase struct {
	name   string
	f      Frame
	padLen int
	hex    string
}

// frameCases is the frame codec table. Header: type, flags, stream (u16 BE),
// padLen (u16 BE); then payload and padLen zero bytes.
var frameCases = []frameCase{
	// STREAM, every combination of the four flags. Payload only with DAT.
	{"stream flags -", Frame{Type: FrameStream, Stream: 1}, 0, "000000010000"},
	{"stream SYN", Frame{Type: FrameStream, Flags: FlagSYN, Stream: 1}, 0, "000100010000"},
	{"stream DAT", Frame{Type: FrameStream, Flags: FlagDAT, Stream: 2, Payload: []byte("hi")}, 0, "0002000200006869"},
	{"stream SYN|DAT", Frame{Type: FrameStream, Flags: FlagSYN | FlagDAT, Stream: 3, Payload: []byte{0xde, 0xad}}, 0, "000300030000dead"},
	{"stream FIN", Frame{Type: FrameStream, Flags: FlagFIN, Stream: 4}, 0, "000400040000"},
	{"stream SYN|FIN", Frame{Type: FrameStream, Flags: FlagSYN | FlagFIN, Stream: 5}, 0, "000500050000"},
	{"stream DAT|FIN", Frame{Type: FrameStream, Flags: FlagDAT | FlagFIN, Stream: 6, Payload: []byte{1}}, 0, "00060006000001"},
	{"stream SYN|DAT|FIN", Frame{Type: FrameStream, Flags: FlagSYN | FlagDAT | FlagFIN, Stream: 7, Payload: []byte{1, 2, 3}}, 0, "000700070000010203"},
	{"stream RST", Frame{Type: FrameStream, Flags: FlagRST, Stream: 8}, 0, "000800080000"},
	{"stream SYN|RST", Frame{Type: FrameStream, Flags: FlagSYN | FlagRST, Stream: 9}, 0, "000900090000"},
	{"stream DAT|RST", Frame{Type: FrameStream, Flags: FlagDAT | FlagRST, Stream: 10, Payload: []byte{0xff}}, 0, "000a000a0000ff"},
	{"stream SYN|DAT|RST", Frame{Type: FrameStream, Flags: FlagSYN | FlagDAT | FlagRST, Stream: 11}, 0, "000b000b0000"},
	{"stream FIN|RST", Frame{Type: FrameStream, Flags: FlagFIN | FlagRST, Stream: 12}, 0, "000c000c0000"},
	{"stream SYN|FIN|RST", Frame{Type: FrameStream, Flags: FlagSYN | FlagFIN | FlagRST, Stream: 13}, 0, "000d000d0000"},
	{"stream DAT|FIN|RST", Frame{Type: FrameStream, Flags: FlagDAT | FlagFIN | FlagRST, Stream: 14, Payload: []byte{0}}, 0, "000e000e000000"},
	{"stream SYN|DAT|FIN|RST", Frame{Type: FrameStream, Flags: FlagSYN | FlagDAT | FlagFIN | FlagRST, Stream: 0xfffe, Payload: []byte{9, 8}}, 0, "000ffffe00000908"},
	// DAT without payload is legal (an empty write).
	{"stream DAT empty", Frame{Type: FrameStream, Flags: FlagDAT, Stream: 0x1234}, 0, "000212340000"},
	// Padding: the header counts it, the body ends with zeros.
	{"stream DAT padded", Frame{Type: FrameStream, Flags: FlagDAT, Stream: 0x0102, Payload: []byte("abc")}, 5, "000201020005616263" + "0000000000"},
	{"stream SYN padded 300", Frame{Type: FrameStream, Flags: FlagSYN, Stream: 1}, 300, "00010001012c" + strings.Repeat("00", 300)},
	{"stream max payload", Frame{Type: FrameStream, Flags: FlagDAT, Stream: 1, Payload: bytes.Repeat([]byte{0x5a}, MaxPayloadLen)}, 0, "000200010000" + strings.Repeat("5a", MaxPayloadLen)},
	{"stream max body", Frame{Type: FrameStream, Flags: FlagDAT, Stream: 1, Payload: []byte{7}}, MaxBodyLen - FrameHeaderLen - 1, "00020001fff807" + strings.Repeat("00", MaxBodyLen-FrameHeaderLen-1)},
	// Flags outside SYN|DAT|FIN|RST are carried, not rejected: the receiver
	// ignores bits it does not know.
	{"stream unknown flag bits", Frame{Type: FrameStream, Flags: 0xf0 | FlagSYN, Stream: 1}, 0, "00f100010000"},

	// Session and control frames.
	{"window", Frame{Type: FrameWindow, Stream: 7, Payload: []byte{0, 1, 0, 0}}, 0, "010000070000" + "00010000"},
	{"window max credit padded", Frame{Type: FrameWindow, Stream: 0xfffe, Payload: []byte{0xff, 0xff, 0xff, 0xff}}, 2, "0100fffe0002" + "ffffffff" + "0000"},
	{"pad", Frame{Type: FramePad}, 0, "020000000000"},
	{"pad 17", Frame{Type: FramePad}, 17, "020000000011" + strings.Repeat("00", 17)},
	{"close", Frame{Type: FrameClose}, 0, "030000000000"},
	{"close padded", Frame{Type: FrameClose}, 3, "030000000003000000"},
	{"reset", Frame{Type: FrameReset}, 0, "040000000000"},
	{"ping empty", Frame{Type: FramePing}, 0, "050000000000"},
	{"ack", Frame{Type: FrameAck, Payload: AckPayload(nil, 0x0102030405060708)}, 0, "090000000000" + "0102030405060708"},
	{"ping 8", Frame{Type: FramePing, Payload: []byte{1, 2, 3, 4, 5, 6, 7, 8}}, 0, "050000000000" + "0102030405060708"},
	{"pong 8 padded", Frame{Type: FramePong, Payload: []byte{1, 2, 3, 4, 5, 6, 7, 8}}, 1, "060000000001" + "0102030405060708" + "00"},
	{"pong 1", Frame{Type: FramePong, Payload: []byte{0xaa}}, 0, "060000000000aa"},
}

func frameEqual(a, b Frame) bool {
	return a.Type == b.Type && a.Flags == b.Flags && a.Stream == b.Stream && bytes.Equal(a.Payload, b.Payload)
}

func TestFrameCodec(t *testing.T) {
	for _, tc := range frameCases {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.hex)
			// Encode, also after a prefix the encoder must keep.
			got := AppendFrame(nil, &tc.f, tc.padLen)
			if !bytes.Equal(got, want) {
				t.Fatalf("AppendFrame = %x\nwant          %x", got, want)
			}
			pre := AppendFrame([]byte("prefix"), &tc.f, tc.padLen)
			if !bytes.Equal(pre, append([]byte("prefix"), want...)) {
				t.Fatalf("AppendFrame with prefix = %x", pre)
			}
			// Decode.
			f, pad, err := ParseFrame(want)
			if err != nil {
				t.Fatalf("ParseFrame: %v", err)
			}
			if !frameEqual(f, tc.f) || pad != tc.padLen {
				t.Fatalf("ParseFrame = %v pad %d, want %v pad %d", f, pad, tc.f, tc.padLen)
			}
			// The payload aliases the body.
			if len(f.Payload) > 0 && &f.Payload[0] != &want[FrameHeaderLen] {
				t.Errorf("payload does not alias the body")
			}
			// Padding content is ignored by the receiver.
			if tc.padLen > 0 {
				junk := bytes.Clone(want)
				for i := len(junk) - tc.padLen; i < len(junk); i++ {
					junk[i] = byte(i) | 0x80
				}
				f2, pad2, err := ParseFrame(junk)
				if err != nil || !frameEqual(f2, tc.f) || pad2 != tc.padLen {
					t.Errorf("nonzero padding: got %v pad %d err %v", f2, pad2, err)
				}
			}
		})
	}
}

func TestParseFrameErrors(t *testing.T) {
	type errCase struct {
		name string
		hex  string
		err  error
	}
	cases := []errCase{
		{"empty", "", ErrShortFrame},
		{"1 byte", "00", ErrShortFrame},
		{"5 bytes", "0002000100", ErrShortFrame},
		{"padding 1 of 0", "000100010001", ErrBadPadding},
		{"padding one too long", "0002000100046162", ErrBadPadding},
		{"padding 0xffff", "02000000ffff" + strings.Repeat("00", 100), ErrBadPadding},
		{"stream id 0", "000100000000", ErrBadFrame},
		{"stream id 0 with DAT", "00020000000061", ErrBadFrame},
		{"stream id 0xffff", "0001ffff0000", ErrBadFrame},
		{"stream payload without DAT, no flags", "00000001000061", ErrBadFrame},
		{"stream payload without DAT or SYN, FIN|RST", "000c0001000061", ErrBadFrame},
		{"window empty", "010000010000", ErrBadFrame},
		{"window 3 bytes", "010000010000000100", ErrBadFrame},
		{"window 5 bytes", "01000001000000010000ff", ErrBadFrame},
		{"window stream 0", "01000000000000010000", ErrBadFrame},
		// Padding is not payload: 4 bytes of which 2 are padding is 2 bytes.
		{"window payload partly padding", "0100000100020001" + "0000", ErrBadFrame},
		{"pad with payload", "02000000000001", ErrBadFrame},
		{"close with payload", "03000000000001", ErrBadFrame},
		{"reset with payload", "040000000000ff", ErrBadFrame},
		{"ping 9 bytes", "050000000000" + "010203040506070809", ErrBadFrame},
		{"pong 9 bytes", "060000000000" + "010203040506070809", ErrBadFrame},
		{"keyupdate on a stream", "070000010000" + strings.Repeat("11", 32), ErrBadFrame},
		{"keyupdate empty", "070000000000", ErrBadFrame},
		{"datagram on stream 0", "080000000000" + "abcd", ErrBadFrame},
		{"ack 4 bytes", "090000000000" + "00000001", ErrBadFrame},
		{"ack 9 bytes", "090000000000" + "000000000000000001", ErrBadFrame},
		{"ack empty", "090000000000", ErrBadFrame},
		{"ack on a stream", "090000010000" + "0000000000000001", ErrBadFrame},
		// Session frames belong to stream 0 (SPEC-v2.md §6d).
		{"window stream 0xffff", "0100ffff0000" + "00000001", ErrBadFrame},
		{"pad on a stream", "020000010000", ErrBadFrame},
		{"close on a stream", "030000020000", ErrBadFrame},
		{"reset on a stream", "040000030000", ErrBadFrame},
		{"ping on a stream", "050000040000" + "01", ErrBadFrame},
		{"pong on a stream", "0600fffe0000", ErrBadFrame},
	}
	cases = append(cases, errCase{"control empty", "0a0000000000", ErrBadFrame},
		errCase{"control on a stream", "0a0000010000" + "0200", ErrBadFrame})
	for typ := 11; typ <= 255; typ++ {
		cases = append(cases, errCase{fmt.Sprintf("type %d", typ), fmt.Sprintf("%02x0000010000", typ), ErrUnknownFrame})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, pad, err := ParseFrame(unhex(t, tc.hex))
			if !errors.Is(err, tc.err) {
				t.Fatalf("ParseFrame = %v pad %d err %v, want %v", f, pad, err, tc.err)
			}
			if pad != 0 || f.Payload != nil {
				t.Errorf("failed parse returned pad %d payload %x", pad, f.Payload)
			}
		})
	}
}

// TestFrameErrorsDistinct keeps the sentinels apart: a caller may map them
// to different reactions only through errors.Is.
func TestFrameErrorsDistinct(t *testing.T) {
	errs := []error{ErrShortFrame, ErrBadPadding, ErrUnknownFrame, ErrBadFrame}
	for i, a := range errs {
		for j, b := range errs {
			if (i == j) != errors.Is(a, b) {
				t.Errorf("errors.Is(%v, %v) = %v", a, b, errors.Is(a, b))
			}
		}
	}
}

func TestFrameTypeString(t *testing.T) {
	want := map[FrameType]string{
		FrameStream:    "STREAM",
		FrameWindow:    "WINDOW",
		FramePad:       "PAD",
		FrameClose:     "CLOSE",
		FrameReset:     "RESET",
		FramePing:      "PING",
		FramePong:      "PONG",
		FrameKeyUpdate: "KEYUPDATE",
		FrameDatagram:  "DATAGRAM",
		FrameAck:       "ACK",
		FrameControl:   "CONTROL",
		11:             "TYPE(11)",
		255:            "TYPE(255)",
	}
	for typ, s := range want {
		if got := typ.String(); got != s {
			t.Errorf("FrameType(%d).String() = %q, want %q", uint8(typ), got, s)
		}
	}
}

func TestFlagsString(t *testing.T) {
	for _, tc := range []struct {
		f    Flags
		want string
	}{
		{0, "-"},
		{FlagSYN, "SYN"},
		{FlagDAT, "DAT"},
		{FlagFIN, "FIN"},
		{FlagRST, "RST"},
		{FlagSYN | FlagDAT, "SYN|DAT"},
		{FlagDAT | FlagFIN, "DAT|FIN"},
		{FlagSYN | FlagDAT | FlagFIN | FlagRST, "SYN|DAT|FIN|RST"},
		{0x10, "MORE"}, {0x20, "0x20"},
		{FlagDAT | 0xc0, "DAT|0xc0"},
		{0xff, "SYN|DAT|FIN|RST|MORE|0xe0"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("Flags(%#x).String() = %q, want %q", uint8(tc.f), got, tc.want)
		}
	}
}

func TestFlagsHas(t *testing.T) {
	f := FlagSYN | FlagDAT
	if !f.Has(FlagSYN) || !f.Has(FlagDAT) || !f.Has(FlagSYN|FlagDAT) || !f.Has(0) {
		t.Error("Has misses a set flag")
	}
	if f.Has(FlagFIN) || f.Has(FlagSYN|FlagFIN) || Flags(0).Has(FlagRST) {
		t.Error("Has reports a flag that is not set")
	}
}

func TestFrameString(t *testing.T) {
	for _, tc := range []struct {
		f    Frame
		want string
	}{
		{Frame{Type: FrameStream, Flags: FlagSYN | FlagDAT, Stream: 5, Payload: []byte("abc")}, "STREAM stream=5 flags=SYN|DAT len=3"},
		{Frame{Type: FrameStream, Stream: 65534}, "STREAM stream=65534 flags=- len=0"},
		{Frame{Type: FrameWindow, Stream: 7, Payload: WindowPayload(nil, 65536)}, "WINDOW stream=7 credit=65536"},
		{Frame{Type: FrameWindow, Stream: 7, Payload: []byte{1, 2, 3}}, "WINDOW stream=7 len=3"},
		{Frame{Type: FramePad}, "PAD stream=0 len=0"},
		{Frame{Type: FrameClose}, "CLOSE stream=0 len=0"},
		{Frame{Type: FramePing, Payload: make([]byte, 8)}, "PING stream=0 len=8"},
		{Frame{Type: 200, Stream: 1, Payload: []byte{1}}, "TYPE(200) stream=1 len=1"},
	} {
		if got := tc.f.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
		// %v uses the same one-line form.
		if got := fmt.Sprint(tc.f); got != tc.want {
			t.Errorf("Sprint = %q, want %q", got, tc.want)
		}
	}
}

func TestWindowPayload(t *testing.T) {
	for _, c := range []uint32{0, 1, 65535, 1 << 24, 0xffffffff} {
		p := WindowPayload([]byte{}, c)
		f := Frame{Type: FrameWindow, Stream: 3, Payload: p}
		body := AppendFrame(nil, &f, 0)
		g, _, err := ParseFrame(body)
		if err != nil {
			t.Fatalf("credit %d: %v", c, err)
		}
		if got := WindowCredit(&g); got != c {
			t.Errorf("credit %d came back as %d", c, got)
		}
	}
	if got := hexs(WindowPayload([]byte{0xaa}, 0x01020304)); got != "aa01020304" {
		t.Errorf("WindowPayload appends big-endian: %s", got)
	}
}
