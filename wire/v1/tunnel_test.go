package v1

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
)

// tunnelErrors maps the original's tunnel exceptions to this package.
var tunnelErrors = map[string]error{
	"UnsupportVersionError": ErrBadVersion,
	"struct.error":          ErrShortMessage,
	"KeyError":              ErrUnknownID,
}

type tunnelFile struct {
	Flags          map[string]int `json:"flags"`
	Version        int            `json:"version"`
	SenderExamples []struct {
		Description string  `json:"description"`
		PacketHex   *string `json:"packet_hex"`
		Version     int     `json:"version"`
		Flags       int     `json:"flags"`
		ConnID      int     `json:"conn_id"`
		PayloadHex  string  `json:"payload_hex"`
	} `json:"sender_examples"`
	ReceiverSemantics []struct {
		Description string  `json:"description"`
		StateBefore string  `json:"state_before"`
		IncomingHex string  `json:"incoming_hex"`
		Exception   *string `json:"exception"`
		Delivered   []struct {
			ConnID  int    `json:"conn_id"`
			Flags   int    `json:"flags"`
			DataHex string `json:"data_hex"`
		} `json:"delivered"`
		RepliesHex []string `json:"replies_hex"`
		StateAfter string   `json:"state_after"`
	} `json:"receiver_semantics"`
	IDAllocator struct {
		Steps []struct {
			Op            string   `json:"op"`
			Result        int      `json:"result"`
			ID            int      `json:"id"`
			NextIDAfter   int      `json:"next_id_after"`
			RecycledAfter []uint16 `json:"recycled_after"`
		} `json:"steps"`
		FirstID   int    `json:"first_id"`
		LastID    int    `json:"last_id"`
		Count     int    `json:"count"`
		NextAfter string `json:"next_allocate_after_65534"`
	} `json:"id_allocator"`
}

// tunnelCodecTable lists exact encodings of tunnel messages.
var tunnelCodecTable = []struct {
	name string
	m    Message
	hex  string
}{
	{"SYN|DAT hello id 1", Message{SYN | DAT, 1, []byte("hello")}, "0103000168656c6c6f"},
	{"DAT world! id 1", Message{DAT, 1, []byte("world!")}, "01020001776f726c6421"},
	{"FIN id 1", Message{FIN, 1, nil}, "01040001"},
	{"RST id 2", Message{RST, 2, nil}, "01080002"},
	{"SYN alone id 7", Message{SYN, 7, nil}, "01010007"},
	{"SYN|DAT|FIN id 7", Message{SYN | DAT | FIN, 7, []byte("abc")}, "01070007616263"},
	{"highest id", Message{SYN | DAT, 65534, []byte{0, 1, 2, 3}}, "0103fffe00010203"},
	{"id 0x1234", Message{DAT, 0x1234, []byte{0xff}}, "01021234ff"},
	{"no flags", Message{0, 7, []byte("abc")}, "01000007616263"},
	{"all flags id 65535", Message{FlagsMask, 65535, nil}, "010fffff"},
}

func TestTunnelCodecTable(t *testing.T) {
	for _, c := range tunnelCodecTable {
		t.Run(c.name, func(t *testing.T) {
			enc := AppendMessage(nil, c.m)
			if hex.EncodeToString(enc) != c.hex {
				t.Fatalf("encode = %x, want %s", enc, c.hex)
			}
			// Appending keeps what dst held.
			if got := AppendMessage([]byte{9}, c.m); !bytes.Equal(got, append([]byte{9}, enc...)) {
				t.Fatal("AppendMessage lost the prefix")
			}
			m, err := ParseMessage(unhex(t, c.hex))
			if err != nil {
				t.Fatal(err)
			}
			if m.Flags != c.m.Flags || m.ID != c.m.ID || !bytes.Equal(m.Payload, c.m.Payload) {
				t.Fatalf("decode = %+v, want %+v", m, c.m)
			}
		})
	}
}

func TestTunnelParseErrors(t *testing.T) {
	for _, c := range []struct {
		hex string
		err error
	}{
		{"", ErrShortMessage}, {"01", ErrShortMessage}, {"010200", ErrShortMessage},
		{"02020007616263", ErrBadVersion}, {"00020007", ErrBadVersion}, {"ff000000", ErrBadVersion},
	} {
		if _, err := ParseMessage(unhex(t, c.hex)); !errors.Is(err, c.err) {
			t.Errorf("ParseMessage(%s) error %v, want %v", c.hex, err, c.err)
		}
	}
	// Reserved bits are kept on parse and cleared on send.
	m, err := ParseMessage(unhex(t, "01f20007"))
	if err != nil || m.Flags != 0xf2 || !m.Flags.Has(DAT) {
		t.Fatalf("reserved bits: %+v %v", m, err)
	}
	if got := hex.EncodeToString(AppendMessage(nil, m)); got != "01020007" {
		t.Errorf("reserved bits sent: %s", got)
	}
}

func TestFlagsString(t *testing.T) {
	for _, c := range []struct {
		f    Flags
		want string
	}{
		{0, "0"}, {SYN, "SYN"}, {SYN | DAT, "SYN|DAT"}, {DAT | FIN, "DAT|FIN"},
		{RST, "RST"}, {0x12, "DAT|0x10"}, {0xf0, "0xf0"},
	} {
		if got := c.f.String(); got != c.want {
			t.Errorf("Flags(%#x).String() = %q, want %q", uint8(c.f), got, c.want)
		}
	}
	if !(SYN | DAT).Has(DAT) || (SYN).Has(SYN|DAT) {
		t.Error("Has is wrong")
	}
}

func TestTunnelVectorConstants(t *testing.T) {
	var f tunnelFile
	loadJSON(t, "tunnel.json", &f)
	want := map[string]Flags{"SYN": SYN, "DAT": DAT, "FIN": FIN, "RST": RST}
	for name, v := range f.Flags {
		if Flags(v) != want[name] {
			t.Errorf("flag %s = %d, want %d", name, v, want[name])
		}
	}
	if f.Version != Version {
		t.Errorf("version %d", f.Version)
	}
}

// TestTunnelSenderExamples drives an Endpoint the way the original
// client and server did and compares what it sends.
func TestTunnelSenderExamples(t *testing.T) {
	var f tunnelFile
	loadJSON(t, "tunnel.json", &f)
	ex := f.SenderExamples
	if len(ex) != 7 {
		t.Fatalf("%d sender examples, the test expects 7", len(ex))
	}
	var e Endpoint
	must := func(m Message, err error) Message {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var alloc IDAllocator
	id1, _ := alloc.Allocate()
	id2, _ := alloc.Allocate()
	id3, _ := alloc.Allocate()
	for _, id := range []uint16{id1, id2, id3} {
		if err := e.Open(id); err != nil {
			t.Fatal(err)
		}
	}
	got := []Message{
		must(e.SendData(id1, []byte("hello"))),
		must(e.SendData(id1, []byte("world!"))),
		must(e.SendData(id1, nil)),
		must(e.SendFIN(id1)),
		{},
		must(e.SendFIN(id3)),
	}
	must(e.SendData(id2, []byte("x")))
	got[4] = must(e.SendRST(id2))
	var e2 Endpoint
	if err := e2.Open(LastID); err != nil {
		t.Fatal(err)
	}
	got = append(got, must(e2.SendData(LastID, []byte{0, 1, 2, 3})))
	for i, x := range ex {
		m := got[i]
		if x.PacketHex == nil {
			if m.Flags != 0 {
				t.Errorf("%s: sent %+v, want nothing", x.Description, m)
			}
			continue
		}
		if enc := hex.EncodeToString(AppendMessage(nil, m)); enc != *x.PacketHex {
			t.Errorf("%s: sent %s, want %s", x.Description, enc, *x.PacketHex)
		}
		p, err := ParseMessage(unhex(t, *x.PacketHex))
		if err != nil || int(p.Flags) != x.Flags || int(p.ID) != x.ConnID || hex.EncodeToString(p.Payload) != x.PayloadHex || x.Version != Version {
			t.Errorf("%s: decoded %+v %v", x.Description, p, err)
		}
	}
	if e.State(id1) != StateClosing || e.State(id2) != StateResetting || e.State(id3) != StateClosed {
		t.Errorf("states after sends: %v %v %v", e.State(id1), e.State(id2), e.State(id3))
	}
}

var stateNames = map[string]State{
	"unknown": StateUnknown, "new": StateNew, "connected": StateConnected,
	"closing": StateClosing, "resetting": StateResetting, "closed": StateClosed,
}

// endpointIn returns an Endpoint whose id has state s, reached through
// the public API only.
func endpointIn(t *testing.T, id uint16, s State) *Endpoint {
	t.Helper()
	e := &Endpoint{}
	var err error
	switch s {
	case StateUnknown:
	case StateNew:
		err = e.Open(id)
	case StateConnected:
		_, err = e.Receive(Message{Flags: SYN, ID: id})
	case StateClosing:
		e.Receive(Message{Flags: SYN, ID: id})
		_, err = e.SendFIN(id)
	case StateResetting:
		e.Receive(Message{Flags: SYN, ID: id})
		_, err = e.SendRST(id)
	case StateClosed:
		e.Receive(Message{Flags: SYN, ID: id})
		_, err = e.Receive(Message{Flags: FIN, ID: id})
	}
	if err != nil || e.State(id) != s {
		t.Fatalf("could not reach state %v: %v (got %v)", s, err, e.State(id))
	}
	return e
}

func TestTunnelReceiverSemantics(t *testing.T) {
	var f tunnelFile
	loadJSON(t, "tunnel.json", &f)
	for _, c := range f.ReceiverSemantics {
		t.Run(c.Description, func(t *testing.T) {
			before, ok := stateNames[c.StateBefore]
			if !ok {
				t.Fatalf("unknown state %q", c.StateBefore)
			}
			e := endpointIn(t, 7, before)
			var res Result
			m, err := ParseMessage(unhex(t, c.IncomingHex))
			if err == nil {
				res, err = e.Receive(m)
			}
			if c.Exception == nil {
				if err != nil {
					t.Fatalf("error %v, want none", err)
				}
			} else if want := tunnelErrors[*c.Exception]; want == nil || !errors.Is(err, want) {
				t.Fatalf("error %v, want %s", err, *c.Exception)
			}
			var delivered []string
			if res.Deliver.Flags != 0 {
				delivered = append(delivered, hex.EncodeToString([]byte{byte(res.Deliver.ID >> 8), byte(res.Deliver.ID), byte(res.Deliver.Flags)})+hex.EncodeToString(res.Deliver.Payload))
			}
			var want []string
			for _, d := range c.Delivered {
				want = append(want, hex.EncodeToString([]byte{byte(d.ConnID >> 8), byte(d.ConnID), byte(d.Flags)})+d.DataHex)
			}
			if !slices.Equal(delivered, want) {
				t.Errorf("delivered %v, want %v", delivered, want)
			}
			var replies []string
			if res.Reply.Flags != 0 {
				replies = append(replies, hex.EncodeToString(AppendMessage(nil, res.Reply)))
			}
			if !slices.Equal(replies, c.RepliesHex) && !(len(replies) == 0 && len(c.RepliesHex) == 0) {
				t.Errorf("replies %v, want %v", replies, c.RepliesHex)
			}
			if got := e.State(7); got.String() != c.StateAfter {
				t.Errorf("state after %v, want %s", got, c.StateAfter)
			}
			if res.Released != (before != StateClosed && e.State(7) == StateClosed) {
				t.Errorf("Released = %v", res.Released)
			}
		})
	}
}

func TestIDAllocatorSteps(t *testing.T) {
	var f tunnelFile
	loadJSON(t, "tunnel.json", &f)
	var a IDAllocator
	for i, s := range f.IDAllocator.Steps {
		switch s.Op {
		case "allocate":
			free := a.Recycled()
			id, err := a.Allocate()
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			// The original hands out some free id; this one the latest.
			if id != uint16(s.Result) || (len(free) > 0 && !slices.Contains(free, id)) {
				t.Errorf("step %d: allocate = %d, want %d", i, id, s.Result)
			}
		case "recycle":
			if err := a.Recycle(uint16(s.ID)); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if a.NextID() != s.NextIDAfter || !slices.Equal(a.Recycled(), s.RecycledAfter) {
				t.Errorf("step %d: next %d recycled %v, want %d %v", i, a.NextID(), a.Recycled(), s.NextIDAfter, s.RecycledAfter)
			}
		default:
			t.Fatalf("unknown op %q", s.Op)
		}
	}
	var b IDAllocator
	for want := f.IDAllocator.FirstID; want <= f.IDAllocator.LastID; want++ {
		id, err := b.Allocate()
		if err != nil || int(id) != want {
			t.Fatalf("allocate #%d = %d, %v", want, id, err)
		}
	}
	if f.IDAllocator.Count != LastID-FirstID+1 || f.IDAllocator.NextAfter != "NoIDAvailableError" {
		t.Fatalf("unexpected vector: %d %s", f.IDAllocator.Count, f.IDAllocator.NextAfter)
	}
	if _, err := b.Allocate(); !errors.Is(err, ErrNoIDAvailable) {
		t.Fatalf("allocate after exhaustion: %v", err)
	}
	if err := b.Recycle(300); err != nil {
		t.Fatal(err)
	}
	if id, err := b.Allocate(); id != 300 || err != nil {
		t.Fatalf("reuse after exhaustion: %d %v", id, err)
	}
	for _, bad := range []uint16{0, 65535} {
		if err := b.Recycle(bad); !errors.Is(err, ErrIDNotAllocated) {
			t.Errorf("Recycle(%d): %v", bad, err)
		}
	}
	var c IDAllocator
	if err := c.Recycle(1); !errors.Is(err, ErrIDNotAllocated) {
		t.Errorf("recycle of never-allocated id: %v", err)
	}
	c.Allocate()
	c.Allocate()
	c.Recycle(1)
	if err := c.Recycle(1); !errors.Is(err, ErrIDNotAllocated) {
		t.Errorf("double recycle: %v", err)
	}
}

func TestEndpointLocalOps(t *testing.T) {
	var e Endpoint
	if _, err := e.SendData(5, []byte("x")); !errors.Is(err, ErrBadState) {
		t.Errorf("data on unknown id: %v", err)
	}
	if _, err := e.SendFIN(5); !errors.Is(err, ErrUnknownID) {
		t.Errorf("FIN on unknown id: %v", err)
	}
	if _, err := e.SendRST(5); !errors.Is(err, ErrUnknownID) {
		t.Errorf("RST on unknown id: %v", err)
	}
	e.Open(5)
	if err := e.Open(5); !errors.Is(err, ErrBadState) {
		t.Errorf("reopen: %v", err)
	}
	if m, err := e.SendSYN(5); err != nil || hex.EncodeToString(AppendMessage(nil, m)) != "01010005" {
		t.Errorf("SendSYN: %+v %v", m, err)
	}
	if _, err := e.SendSYN(5); !errors.Is(err, ErrBadState) {
		t.Errorf("second SYN: %v", err)
	}
	if m, _ := e.SendData(5, []byte("a")); m.Flags != DAT {
		t.Errorf("data after bare SYN: %v", m.Flags)
	}
	e.Open(6)
	if m, err := e.SendRST(6); m.Flags != 0 || err != nil || e.State(6) != StateClosed {
		t.Errorf("RST on new stream: %+v %v %v", m, err, e.State(6))
	}
	if err := e.Open(6); err != nil {
		t.Errorf("reusing closed id: %v", err)
	}
	for _, s := range []State{StateUnknown, StateNew, StateConnected, StateClosing, StateResetting, StateClosed, 9} {
		if s.String() == "" {
			t.Errorf("empty name for state %d", s)
		}
	}
	if State(9).String() != "State(9)" {
		t.Error(State(9).String())
	}
}
