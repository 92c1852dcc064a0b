package stages

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"usocks/wire"
)

// Padding of v2 records against traffic analysis (SPEC-v2.md, "Padding").
//
// The unit is the write burst: everything the encrypt stage seals from one
// batch, which the backend writer sends in one write. Without padding the
// size of the burst's last TCP segment (burst length mod the segment size)
// follows the application. With padding the last frame of every burst
// carries enough padding that this tail length is drawn instead from a
// distribution chosen at random for each session (obfs4's padBurst idea):
// two sessions show different packet-size histograms, and neither shows the
// application's. Padding is encrypted and ignored by the receiver.
//
// Levels and their overhead budgets (bulk transfer, measured on the wire):
//
// With low and high, each stream's first five data frames are also padded
// on their own to a random size below earlyMax (two segments, Cloak-style),
// against fingerprints of handshakes carried inside streams (TLS-in-TLS,
// Xue et al. 2024): a browser's ClientHello with an X25519MLKEM768 key
// share is about 1.8 KB, so the range must reach past one segment.
//
//	off   no padding
//	low   every burst grows by a draw from the session's distribution over
//	      [0, 512): at most 511 bytes per burst, ≤ 2 % on bulk transfers
//	      (more, relatively, on tiny interactive messages)
//	high  the burst's tail length becomes a draw over [0, 1448), and every
//	      record body is rounded up to a multiple of 64 bytes: ≤ 6 % on
//	      bulk transfers

// PadLevel selects a padding policy.
type PadLevel int

// Padding levels.
const (
	PadOff PadLevel = iota
	PadLow
	PadHigh
)

func (l PadLevel) String() string { return [...]string{"off", "low", "high"}[l] }

// ParsePadLevel maps a config value to a level.
func ParsePadLevel(s string) (PadLevel, error) {
	switch s {
	case "", "off":
		return PadOff, nil
	case "low":
		return PadLow, nil
	case "high":
		return PadHigh, nil
	}
	return 0, fmt.Errorf("%q: want off, low or high", s)
}

// segmentSize is the TCP payload size padding aims at (1500-byte MTU).
const segmentSize = 1448

// padPoints is how many tail lengths a session's distribution has.
const padPoints = 24

// earlyFrames is how many first data frames of each stream are padded on
// their own (Cloak-style), so that the sizes of an encapsulated handshake
// (TLS ClientHello, server certificates) do not show through.
const earlyFrames = 5

// earlyMax bounds the early padding: a padded early frame's payload and
// padding stay below it.
const earlyMax = 2 * segmentSize

// maxEarlyTracked bounds the per-stream counters; past it they restart.
const maxEarlyTracked = 8192

// Padding is one session's padding policy. Only the encrypt stage uses it.
type Padding struct {
	level  PadLevel
	values [padPoints]int    // candidate tail lengths
	cum    [padPoints]uint32 // cumulative weights
	rand   io.Reader
	buf    [4]byte
	early  map[uint16]int // data frames sent per stream, up to earlyFrames
}

// NewPadding draws a session's distribution from r (which it keeps for
// sampling). It returns nil for PadOff.
func NewPadding(level PadLevel, r io.Reader) (*Padding, error) {
	if level == PadOff {
		return nil, nil
	}
	p := &Padding{level: level, rand: r}
	max := 512
	if level == PadHigh {
		max = segmentSize
	}
	var b [padPoints * 4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, err
	}
	var total uint32
	for i := range p.values {
		v := binary.LittleEndian.Uint32(b[i*4:])
		p.values[i] = int(v % uint32(max))
		total += 1 + (v>>16)%64 // weight 1..64
		p.cum[i] = total
	}
	sort.Ints(p.values[:])
	return p, nil
}

// sample draws one tail length.
func (p *Padding) sample() int {
	if _, err := io.ReadFull(p.rand, p.buf[:]); err != nil {
		return 0
	}
	x := binary.LittleEndian.Uint32(p.buf[:]) % p.cum[padPoints-1]
	i := sort.Search(padPoints, func(i int) bool { return p.cum[i] > x })
	return p.values[i]
}

// recordPad is the padding for a frame that is not the last of its burst.
func (p *Padding) recordPad(f *wire.Frame) int {
	pad := p.earlyPad(f)
	if p.level != PadHigh {
		return pad
	}
	body := wire.FrameHeaderLen + len(f.Payload) + pad
	return pad + (64-body%64)%64
}

// earlyPad pads each of a stream's first earlyFrames data frames to a
// random size in [len, earlyMax) (no padding for frames already that big).
func (p *Padding) earlyPad(f *wire.Frame) int {
	if f.Type != wire.FrameStream {
		return 0
	}
	if f.Flags.Has(wire.FlagFIN) || f.Flags.Has(wire.FlagRST) {
		delete(p.early, f.Stream)
		return 0
	}
	if !f.Flags.Has(wire.FlagDAT) {
		return 0
	}
	if p.early == nil || len(p.early) >= maxEarlyTracked {
		p.early = make(map[uint16]int)
	}
	n := p.early[f.Stream]
	if n >= earlyFrames {
		return 0
	}
	p.early[f.Stream] = n + 1
	if len(f.Payload) >= earlyMax {
		return 0
	}
	return int(p.draw(uint32(earlyMax - len(f.Payload))))
}

// draw is a uniform number in [0, n).
func (p *Padding) draw(n uint32) uint32 {
	if n == 0 {
		return 0
	}
	if _, err := io.ReadFull(p.rand, p.buf[:]); err != nil {
		return 0
	}
	return binary.LittleEndian.Uint32(p.buf[:]) % n
}

// burstPad is the padding for the last frame of a burst whose records so
// far (this frame included, unpadded) take sealed bytes: it makes the
// burst's tail length a draw from the session's distribution.
func (p *Padding) burstPad(f *wire.Frame, sealed int) int {
	pad := p.recordPad(f)
	sealed += pad
	if p.level == PadLow {
		pad += p.sample() // a draw from the session's distribution
	} else {
		tail := sealed % segmentSize
		pad += (p.sample() - tail + segmentSize) % segmentSize
	}
	if room := wire.MaxBodyLen - wire.FrameHeaderLen - len(f.Payload); pad > room {
		pad = room
	}
	return pad
}
