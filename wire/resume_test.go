package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// Known answers of the resume extension and the ACK frame (SPEC-v2.md §7b).
func TestResumeVectors(t *testing.T) {
	id := SessionID{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	cr := ClientResume{ID: id, Received: 0x1234}
	var got []byte
	got = Extensions{cr.Ext()}.appendTo(got)
	if want := "030018" + "000102030405060708090a0b0c0d0e0f" + "0000000000001234"; hex.EncodeToString(got) != want {
		t.Errorf("client resume = %x, want %s", got, want)
	}
	sr := ServerResume{Status: ResumeOK, Received: 7}
	got = Extensions{sr.Ext()}.appendTo(nil)
	if want := "030009" + "00" + "0000000000000007"; hex.EncodeToString(got) != want {
		t.Errorf("server resume = %x, want %s", got, want)
	}
	f := Frame{Type: FrameAck, Payload: AckPayload(nil, 42)}
	body := AppendFrame(nil, &f, 3)
	if want := "090000000003" + "000000000000002a" + "000000"; hex.EncodeToString(body) != want {
		t.Errorf("ack frame = %x, want %s", body, want)
	}
	pf, pad, err := ParseFrame(body)
	if err != nil || pad != 3 || AckCount(&pf) != 42 || pf.String() != "ACK count=42" {
		t.Errorf("ParseFrame(ack) = %v %d %v", pf, pad, err)
	}
}

func TestResumeExtensionRules(t *testing.T) {
	ext := func(v string) Extensions {
		b, err := hex.DecodeString(v)
		if err != nil {
			t.Fatal(err)
		}
		return Extensions{{Type: ExtResume, Value: b}}
	}
	id := "ffeeddccbbaa99887766554433221100"
	clientCases := []struct {
		name string
		ext  Extensions
		ok   bool
		err  error
		want ClientResume
	}{
		{"absent", nil, false, nil, ClientResume{}},
		{"absent, others present", Extensions{DefenceExt(DefenceLight)}, false, nil, ClientResume{}},
		{"valid", ext(id + "0000000000000009"), true, nil, ClientResume{ID: SessionID{0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0}, Received: 9}},
		{"short", ext(id + "00000000000009"), false, ErrHandshake, ClientResume{}},
		{"long", ext(id + "000000000000000900"), false, ErrHandshake, ClientResume{}},
		{"empty", ext(""), false, ErrHandshake, ClientResume{}},
		{"lanes 4", append(ext(id+"0000000000000009"), Extension{Type: ExtLanes, Value: []byte{4}}), true, nil,
			ClientResume{ID: SessionID{0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0}, Received: 9, Lanes: 4}},
		{"lanes 0", append(ext(id+"0000000000000009"), Extension{Type: ExtLanes, Value: []byte{0}}), false, ErrHandshake, ClientResume{}},
		{"lanes 17", append(ext(id+"0000000000000009"), Extension{Type: ExtLanes, Value: []byte{17}}), false, ErrHandshake, ClientResume{}},
		{"lanes 2 bytes", append(ext(id+"0000000000000009"), Extension{Type: ExtLanes, Value: []byte{0, 4}}), false, ErrHandshake, ClientResume{}},
		{"lanes without resume", Extensions{{Type: ExtLanes, Value: []byte{4}}}, false, nil, ClientResume{}},
	}
	for _, c := range clientCases {
		t.Run("client "+c.name, func(t *testing.T) {
			got, ok, err := ClientResumeOf(c.ext)
			if !errors.Is(err, c.err) || ok != c.ok || got != c.want {
				t.Fatalf("ClientResumeOf = %+v %v %v, want %+v %v %v", got, ok, err, c.want, c.ok, c.err)
			}
		})
	}
	serverCases := []struct {
		name string
		ext  Extensions
		ok   bool
		err  error
		want ServerResume
	}{
		{"absent", nil, false, nil, ServerResume{}},
		{"resumed", ext("00" + "0000000000000100"), true, nil, ServerResume{ResumeOK, 256, 0}},
		{"new", ext("01" + "0000000000000000"), true, nil, ServerResume{ResumeNew, 0, 0}},
		{"lost", ext("02" + "0000000000000000"), true, nil, ServerResume{ResumeLost, 0, 0}},
		{"unknown status", ext("03" + "0000000000000000"), false, ErrHandshake, ServerResume{}},
		{"short", ext("00" + "00000000000000"), false, ErrHandshake, ServerResume{}},
		{"long", ext("00" + "000000000000000000"), false, ErrHandshake, ServerResume{}},
		{"lanes 16", append(ext("00"+"0000000000000100"), Extension{Type: ExtLanes, Value: []byte{16}}), true, nil, ServerResume{ResumeOK, 256, 16}},
		{"lanes empty", append(ext("00"+"0000000000000100"), Extension{Type: ExtLanes}), false, ErrHandshake, ServerResume{}},
	}
	for _, c := range serverCases {
		t.Run("server "+c.name, func(t *testing.T) {
			got, ok, err := ServerResumeOf(c.ext)
			if !errors.Is(err, c.err) || ok != c.ok || got != c.want {
				t.Fatalf("ServerResumeOf = %+v %v %v, want %+v %v %v", got, ok, err, c.want, c.ok, c.err)
			}
		})
	}
	for s, want := range map[ResumeStatus]string{ResumeOK: "resumed", ResumeNew: "new", ResumeLost: "lost", 9: "status(9)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", uint8(s), s.String(), want)
		}
	}
}

// FuzzResume feeds arbitrary extension values to both parsers: they never
// panic, accept exactly the valid lengths, and what they accept encodes
// back to the same bytes.
func FuzzResume(f *testing.F) {
	f.Add([]byte{}, false)
	f.Add(bytes.Repeat([]byte{1}, ClientResumeLen), true)
	f.Add(append([]byte{0}, make([]byte, 8)...), false)
	f.Add(append([]byte{3}, make([]byte, 8)...), false)
	f.Fuzz(func(t *testing.T, v []byte, asAck bool) {
		e := Extensions{{Type: ExtResume, Value: v}}
		if c, ok, err := ClientResumeOf(e); ok {
			if err != nil || len(v) != ClientResumeLen || !bytes.Equal(c.Ext().Value, v) {
				t.Fatalf("client %x: %+v %v", v, c, err)
			}
		} else if err == nil || len(v) == ClientResumeLen {
			t.Fatalf("client %x refused without error (%v)", v, err)
		}
		if s, ok, err := ServerResumeOf(e); ok {
			if err != nil || len(v) != ServerResumeLen || !bytes.Equal(s.Ext().Value, v) {
				t.Fatalf("server %x: %+v %v", v, s, err)
			}
		} else if err == nil {
			t.Fatalf("server %x refused without error", v)
		}
		if asAck {
			body := append([]byte{byte(FrameAck), 0, 0, 0, 0, 0}, v...)
			fr, _, err := ParseFrame(body)
			if (err == nil) != (len(v) == AckLen) {
				t.Fatalf("ack %x: %v", v, err)
			}
			if err == nil && !bytes.Equal(AckPayload(nil, AckCount(&fr)), v) {
				t.Fatalf("ack %x does not round-trip", v)
			}
		}
	})
}
