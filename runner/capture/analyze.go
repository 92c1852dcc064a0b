package capture

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"usocks/wire"
)

// Analysis: what an on-path observer of the captured sessions sees, from
// the capture alone (no key needed). The observer watches each backend
// connection (one session) on a 1500-byte-MTU link:
//
//   - Wire bytes are the hs and backend events: the bytes usocks wrote to
//     or read from the backend connection (a TLS or WebSocket backend adds
//     its own framing, which is not counted).
//   - Packets: each event's bytes are cut into TCP segments of at most
//     MSS (1448 bytes: 1500 − IPv4 20 − TCP 20 − timestamps 12), all at
//     the event's time. An out event is one write, exactly as sent; an in
//     event is one read, which may merge several of the peer's writes, so
//     in-direction packet sizes are those of a merged stream.
//   - Records: v2 records from the frame events (their size on the wire
//     is the record overhead, the frame header, the payload and the
//     padding); PAD records are the dummies. Frame events are in every
//     capture, plaintext or not (they carry header fields only).
//   - Payload bytes are the STREAM and DATAGRAM payloads; overhead is
//     (wire − payload) / payload.
//   - A burst is the bytes one direction sends on one connection until the
//     other direction sends or the connection is idle for more than
//     BurstGap (100 ms).
//   - Inter-arrival times are between consecutive packets of one direction
//     of one connection (0 between the segments of one write).

// Defaults of the observer model.
const (
	DefaultMSS      = 1448
	DefaultBurstGap = 100 * time.Millisecond
)

// Analysis is what Analyze found.
type Analysis struct {
	Header   Header
	MSS      int
	BurstGap time.Duration
	Sessions int
	// Links is how many of the Sessions (backend connections) carry a
	// later link of a resumed session (link events).
	Links int
	// Events is the number of events read; BadLines the lines skipped;
	// Dropped what the capture itself lost (queue full).
	Events, BadLines int
	Dropped          int64
	// Out and In are the two directions, seen from the capturing side.
	Out, In DirStats
}

// DirStats is what the observer sees of one direction.
type DirStats struct {
	WireBytes      int64 // hs and backend bytes
	HandshakeBytes int64 // of which handshake
	PayloadBytes   int64 // STREAM and DATAGRAM payload
	Packets        int64
	PacketSizes    Histogram
	Records        int64 // frame events
	RecordSizes    Histogram
	PadRecords     int64
	PadBytes       int64   // wire bytes of the PAD records (v2)
	Bursts         Summary // bytes per burst
	InterArrival   Summary // microseconds between packets
}

// OverheadPct is (wire − payload) / payload in percent; 0 without payload.
func (d *DirStats) OverheadPct() float64 {
	if d.PayloadBytes == 0 {
		return 0
	}
	return 100 * float64(d.WireBytes-d.PayloadBytes) / float64(d.PayloadBytes)
}

// Histogram counts values in bins [Lo, Hi].
type Histogram []Bin

// Bin is one bin of a Histogram.
type Bin struct {
	Lo, Hi int
	Count  int64
}

func (h Histogram) add(v int) {
	for i := range h {
		if v <= h[i].Hi {
			h[i].Count++
			return
		}
	}
}

// packetBins are 100-byte bins up to the MSS, a full segment on its own.
func packetBins(mss int) Histogram {
	var h Histogram
	for lo := 1; lo < mss; lo += 100 {
		h = append(h, Bin{Lo: lo, Hi: min(lo+99, mss-1)})
	}
	return append(h, Bin{Lo: mss, Hi: mss})
}

// recordBins are powers of two up to the largest v2 record.
func recordBins() Histogram {
	h := Histogram{{Lo: 0, Hi: 64}}
	for hi := 128; hi/2 < wire.MaxBodyLen+wire.RecordOverhead; hi *= 2 {
		h = append(h, Bin{Lo: hi/2 + 1, Hi: hi})
	}
	return h
}

// Summary is the distribution of a sample: count, mean and percentiles
// (nearest rank).
type Summary struct {
	N                       int
	Mean                    float64
	P10, P50, P90, P99, Max float64
}

func summarize(v []float64) Summary {
	if len(v) == 0 {
		return Summary{}
	}
	slices.Sort(v)
	rank := func(p float64) float64 {
		i := int(p*float64(len(v))+0.999999) - 1
		return v[min(max(i, 0), len(v)-1)]
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	return Summary{N: len(v), Mean: sum / float64(len(v)),
		P10: rank(0.10), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: v[len(v)-1]}
}

// Analyzer computes an Analysis from events fed in file order.
type Analyzer struct {
	a    Analysis
	sess map[int]*observed
	// samples, by direction (DirIn, DirOut)
	bursts, gaps [3][]float64
}

// observed is the observer's state of one connection.
type observed struct {
	last     [3]time.Duration // last packet time per direction
	seen     [3]bool
	burstDir Dir
	burst    int64
	burstEnd time.Duration
}

// NewAnalyzer starts an analysis of a capture with header h; mss ≤ 0 and
// gap ≤ 0 take the defaults.
func NewAnalyzer(h Header, mss int, gap time.Duration) *Analyzer {
	if mss <= 0 {
		mss = DefaultMSS
	}
	if gap <= 0 {
		gap = DefaultBurstGap
	}
	z := &Analyzer{a: Analysis{Header: h, MSS: mss, BurstGap: gap}, sess: map[int]*observed{}}
	for _, d := range []*DirStats{&z.a.Out, &z.a.In} {
		d.PacketSizes, d.RecordSizes = packetBins(mss), recordBins()
	}
	return z
}

func (z *Analyzer) dir(d Dir) *DirStats {
	if d == DirOut {
		return &z.a.Out
	}
	return &z.a.In
}

// Add takes the next event.
func (z *Analyzer) Add(e *Event) {
	z.a.Events++
	if e.Layer == LayerClose {
		z.a.Dropped = e.Dropped
		return
	}
	if e.Layer == LayerLink && e.Session != 0 {
		z.a.Links++
	}
	if e.Session == 0 || (e.Dir != DirIn && e.Dir != DirOut) {
		return
	}
	s := z.sess[e.Session]
	if s == nil {
		s = &observed{}
		z.sess[e.Session] = s
		z.a.Sessions++
	}
	d := z.dir(e.Dir)
	switch e.Layer {
	case LayerHandshake, LayerBackend:
		if e.Layer == LayerHandshake {
			d.HandshakeBytes += e.N
		}
		d.WireBytes += e.N
		z.packets(s, e, d)
	case LayerFrame:
		d.Records++
		f := &e.Frame
		if f.Type == wire.FrameStream || f.Type == wire.FrameDatagram {
			d.PayloadBytes += int64(f.Len)
		}
		size := wire.RecordOverhead + wire.FrameHeaderLen + f.Len + f.Pad
		if z.a.Header.Protocol != "v1" {
			d.RecordSizes.add(size)
		}
		if f.Type == wire.FramePad {
			d.PadRecords++
			if z.a.Header.Protocol != "v1" {
				d.PadBytes += int64(size)
			}
		}
	}
}

// packets cuts one write or read into segments and follows bursts and
// inter-arrival times.
func (z *Analyzer) packets(s *observed, e *Event, d *DirStats) {
	if s.burst > 0 && (s.burstDir != e.Dir || e.T-s.burstEnd > z.a.BurstGap) {
		z.bursts[s.burstDir] = append(z.bursts[s.burstDir], float64(s.burst))
		s.burst = 0
	}
	s.burstDir, s.burstEnd = e.Dir, e.T
	s.burst += e.N
	for n := e.N; n > 0; n -= int64(z.a.MSS) {
		seg := int(min(n, int64(z.a.MSS)))
		d.Packets++
		d.PacketSizes.add(seg)
		if s.seen[e.Dir] {
			z.gaps[e.Dir] = append(z.gaps[e.Dir], float64(max(e.T-s.last[e.Dir], 0).Microseconds()))
		}
		s.seen[e.Dir], s.last[e.Dir] = true, e.T
	}
}

// Result ends the open bursts and returns the analysis.
func (z *Analyzer) Result() *Analysis {
	for _, s := range z.sess {
		if s.burst > 0 {
			z.bursts[s.burstDir] = append(z.bursts[s.burstDir], float64(s.burst))
			s.burst = 0
		}
	}
	for _, d := range []Dir{DirIn, DirOut} {
		z.dir(d).Bursts = summarize(z.bursts[d])
		z.dir(d).InterArrival = summarize(z.gaps[d])
	}
	a := z.a
	return &a
}

// Analyze reads a capture and analyzes it with the given MSS and burst
// gap (≤ 0: the defaults). Bad lines are counted and skipped.
func Analyze(r io.Reader, mss int, gap time.Duration) (*Analysis, error) {
	cr, err := NewReader(r)
	if err != nil {
		return nil, err
	}
	z := NewAnalyzer(cr.Header, mss, gap)
	for {
		e, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return z.Result(), nil
		}
		var le *LineError
		if errors.As(err, &le) {
			z.a.BadLines++
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading capture: %w", err)
		}
		z.Add(&e)
	}
}
