package stages

import (
	"crypto/rand"
	mrand "math/rand/v2"
	"testing"

	"usocks/wire"
)

func TestPaddingLevels(t *testing.T) {
	if p, err := NewPadding(PadOff, rand.Reader); p != nil || err != nil {
		t.Fatalf("off: %v %v", p, err)
	}
	for _, s := range []string{"", "off", "low", "high"} {
		if _, err := ParsePadLevel(s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ParsePadLevel("max"); err == nil {
		t.Fatal("bad level accepted")
	}
}

func TestPaddingLowBudget(t *testing.T) {
	p, err := NewPadding(PadLow, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: make([]byte, 100)}
	for i := 0; i < earlyFrames; i++ {
		p.recordPad(&f) // the stream's first frames have their own padding
	}
	for i := 0; i < 10000; i++ {
		if pad := p.burstPad(&f, 140); pad < 0 || pad >= 512 {
			t.Fatalf("low padding %d out of [0, 512)", pad)
		}
		if p.recordPad(&f) != 0 {
			t.Fatal("low pads only bursts")
		}
	}
}

// With high padding the tail length of every burst is one of the
// session's values, whatever the application sent.
func TestPaddingHighTargetsTails(t *testing.T) {
	p, err := NewPadding(PadHigh, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[int]bool{}
	for _, v := range p.values {
		allowed[v] = true
	}
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		n := r.IntN(wire.MaxPayloadLen)
		f := wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: make([]byte, n)}
		sealed := r.IntN(200000) + wire.RecordOverhead + wire.FrameHeaderLen + n
		pad := p.burstPad(&f, sealed)
		if !allowed[(sealed+pad)%segmentSize] {
			t.Fatalf("tail %d is not a session value", (sealed+pad)%segmentSize)
		}
		if (wire.FrameHeaderLen+n+p.recordPad(&f))%64 != 0 {
			t.Fatal("high level must round record bodies to 64 bytes")
		}
	}
	// Near the record size limit padding is clamped, never overflowing.
	big := wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: make([]byte, wire.MaxBodyLen-wire.FrameHeaderLen-10)}
	if pad := p.burstPad(&big, 70000); pad > 10 {
		t.Fatalf("pad %d overflows the record", pad)
	}
}

// Two sessions draw different distributions: their size histograms differ.
func TestPaddingDiffersBetweenSessions(t *testing.T) {
	hist := func() map[int]int {
		p, err := NewPadding(PadHigh, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h := map[int]int{}
		f := wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: make([]byte, 64)}
		for i := 0; i < 2000; i++ {
			h[(100+p.burstPad(&f, 100))%segmentSize]++
		}
		return h
	}
	a, b := hist(), hist()
	same := 0
	for k := range a {
		if b[k] > 0 {
			same++
		}
	}
	if same == len(a) && len(a) == len(b) {
		t.Fatal("two sessions produced the same packet-size histogram")
	}
}

// Each stream's first data frames are padded on their own, up to earlyMax
// bytes; later ones are not, and a FIN forgets the stream.
func TestPaddingEarlyFrames(t *testing.T) {
	p, err := NewPadding(PadLow, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	padded := 0
	for id := uint16(1); id <= 200; id++ {
		f := wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: id, Payload: make([]byte, 50)}
		for i := 0; i < earlyFrames; i++ {
			pad := p.recordPad(&f)
			if pad < 0 || 50+pad >= earlyMax {
				t.Fatalf("early pad %d", pad)
			}
			if pad > 0 {
				padded++
			}
		}
		if pad := p.recordPad(&f); pad != 0 {
			t.Fatalf("frame %d of stream %d padded %d", earlyFrames+1, id, pad)
		}
		p.recordPad(&wire.Frame{Type: wire.FrameStream, Flags: wire.FlagFIN, Stream: id})
		if _, kept := p.early[id]; kept {
			t.Fatal("FIN must forget the stream")
		}
	}
	if padded < 900 {
		t.Fatalf("only %d of 1000 early frames padded", padded)
	}
}
