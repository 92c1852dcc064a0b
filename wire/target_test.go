package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// Vectors of SPEC-v2.md §6e.
var targetCases = []struct {
	name string
	t    Target
	hex  string
}{
	{"ipv4", Target{TargetIPv4, []byte{192, 0, 2, 7}, 443}, "01c000020701bb"},
	{"ipv6", Target{TargetIPv6, []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}, 8080}, "0420010db80000000000000000000000011f90"},
	{"name", Target{TargetName, []byte("example.com"), 80}, "030b6578616d706c652e636f6d0050"},
	{"port 0", Target{TargetName, []byte("a"), 0}, "0301610000"},
	{"port 65535", Target{TargetIPv4, []byte{127, 0, 0, 1}, 65535}, "017f000001ffff"},
	{"255-byte name", Target{TargetName, []byte(strings.Repeat("a", 255)), 1}, "03ff" + strings.Repeat("61", 255) + "0001"},
}

func TestTargetVectors(t *testing.T) {
	for _, tc := range targetCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AppendTarget(nil, tc.t)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != tc.hex {
				t.Fatalf("encoded %x, want %s", got, tc.hex)
			}
			if len(got) > MaxTargetLen {
				t.Fatalf("%d bytes, over MaxTargetLen", len(got))
			}
			back, err := ParseTarget(got)
			if err != nil {
				t.Fatal(err)
			}
			if back.Type != tc.t.Type || !bytes.Equal(back.Addr, tc.t.Addr) || back.Port != tc.t.Port {
				t.Fatalf("parsed %+v, want %+v", back, tc.t)
			}
		})
	}
}

func TestTargetMalformed(t *testing.T) {
	for _, tc := range []struct{ name, hex string }{
		{"empty", ""},
		{"unknown atyp", "020000000000"},
		{"atyp 0", "00"},
		{"ipv4 no port", "01c0000207"},
		{"ipv4 half port", "01c000020701"},
		{"ipv4 trailing", "01c000020701bb00"},
		{"ipv6 short", "0420010db8000000000000000000000001"},
		{"ipv6 trailing", "0420010db80000000000000000000000011f9000"},
		{"name length 0", "03000050"},
		{"name no length", "03"},
		{"name short", "030b6578616d706c65"},
		{"name trailing", "03016100500a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := hex.DecodeString(tc.hex)
			if _, err := ParseTarget(p); !errors.Is(err, ErrBadTarget) {
				t.Fatalf("ParseTarget(%s) = %v, want ErrBadTarget", tc.hex, err)
			}
		})
	}
	for _, tg := range []Target{
		{TargetName, nil, 1},
		{TargetName, make([]byte, 256), 1},
		{TargetIPv4, make([]byte, 16), 1},
		{TargetIPv6, make([]byte, 4), 1},
		{2, []byte{1}, 1},
	} {
		if _, err := AppendTarget(nil, tg); !errors.Is(err, ErrBadTarget) {
			t.Errorf("AppendTarget(%+v) = %v, want ErrBadTarget", tg, err)
		}
	}
}

// A SYN frame may carry a payload without DAT (its target); no other
// STREAM frame may.
func TestSynTargetFrame(t *testing.T) {
	tp, _ := AppendTarget(nil, Target{TargetName, []byte("example.com"), 443})
	body := AppendFrame(nil, &Frame{Type: FrameStream, Flags: FlagSYN, Stream: 9, Payload: tp}, 0)
	f, _, err := ParseFrame(body)
	if err != nil || !bytes.Equal(f.Payload, tp) || f.Flags != FlagSYN {
		t.Fatalf("SYN with target: %v %v", f, err)
	}
	body = AppendFrame(nil, &Frame{Type: FrameStream, Flags: FlagFIN, Stream: 9, Payload: tp}, 0)
	if _, _, err := ParseFrame(body); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("FIN with payload: %v, want ErrBadFrame", err)
	}
}

// FuzzParseTarget: ParseTarget never panics, fails only with
// ErrBadTarget, and what it accepts encodes back to the same bytes.
//
//	go test ./wire/ -run '^$' -fuzz '^FuzzParseTarget$' -fuzztime 10s
func FuzzParseTarget(f *testing.F) {
	for _, tc := range targetCases {
		p, _ := hex.DecodeString(tc.hex)
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		tg, err := ParseTarget(p)
		if err != nil {
			if !errors.Is(err, ErrBadTarget) {
				t.Fatalf("error %v is not ErrBadTarget", err)
			}
			return
		}
		b, err := AppendTarget(nil, tg)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", tg, err)
		}
		if !bytes.Equal(b, p) {
			t.Fatalf("%x re-encoded as %x", p, b)
		}
	})
}
