package capture

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"usocks/wire"
	v1 "usocks/wire/v1"
)

// Replay: a capture file fed back through the record decoder the decrypt
// stages use. Each session's backend chunks, exactly as captured, go one
// by one into a wire.RecordReader (v2) or a v1.Opener (v1), called
// synchronously (replay_decoder.go); the frames opened from a chunk are
// printed under it, and a decoding error right where decoding stopped.
// The v2 handshake flights are opened with wire.ClientHelloReader and
// wire.ServerHelloReader. Nothing here decodes records a second way.

// ReplayOptions control Replay.
type ReplayOptions struct {
	// Key is the v2 PSK (base64 or passphrase; it opens the handshake) or
	// the v1 config key (it opens every record). Empty: decode only what
	// the file itself allows (records of a v2 plaintext capture).
	Key string
	// Stream, if ≥ 0, shows only records and frames of that stream (and
	// session-level lines).
	Stream int
	// Dir, if not DirNone, shows only that direction.
	Dir Dir
	// JSON prints one JSON object per line instead of text.
	JSON bool
	// NoTime leaves out time offsets (stable listings for golden files).
	NoTime bool
}

// ReplayStats sums up a replay.
type ReplayStats struct {
	Sessions, Events, Errors int
	Dropped                  int64
}

// Replay reads the capture from r and writes its listing to w. It returns
// an error only when it cannot replay at all (not a capture file, a bad
// key, an I/O error); everything wrong inside the file is reported in the
// listing, where it occurs.
func Replay(r io.Reader, w io.Writer, o ReplayOptions) (ReplayStats, error) {
	cr, err := NewReader(r)
	if err != nil {
		return ReplayStats{}, err
	}
	rp := &replayer{o: o, hdr: cr.Header, sess: map[int]*rsess{}, out: bufio.NewWriter(w)}
	if o.Key != "" {
		if cr.Header.Protocol == "v1" {
			k := v1.DeriveKey(o.Key)
			rp.v1key = &k
		} else {
			k, err := wire.ParseKey(o.Key)
			if err != nil {
				return ReplayStats{}, fmt.Errorf("--key: %w", err)
			}
			rp.psk = &k
		}
	}
	defer rp.stopAll()
	rp.header()
	for {
		e, err := cr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var le *LineError
		if errors.As(err, &le) {
			rp.stats.Errors++
			rp.emit(&rline{Line: le.Line, Kind: "error", Dir: "-", Error: "bad capture line: " + le.Err.Error()})
			continue
		}
		if err != nil {
			rp.stopAll()
			_ = rp.out.Flush()
			return rp.stats, fmt.Errorf("reading capture: %w", err)
		}
		rp.line = cr.Line()
		rp.stats.Events++
		rp.event(&e)
	}
	rp.finish()
	if err := rp.out.Flush(); err != nil {
		return rp.stats, err
	}
	return rp.stats, nil
}

type replayer struct {
	o     ReplayOptions
	hdr   Header
	psk   *wire.PSK
	v1key *[v1.KeySize]byte
	sess  map[int]*rsess
	order []*rsess
	out   *bufio.Writer
	stats ReplayStats
	line  int
	t     time.Duration
	trail bool
	live  int // record decoders holding buffers
}

// maxLiveDecoders bounds the record decoders holding buffers at once (two
// per session that has not ended), so a hostile file cannot exhaust
// memory.
const maxLiveDecoders = 512

func (rp *replayer) roomFor(s *rsess) bool {
	if rp.live+2 > maxLiveDecoders {
		rp.note(s, fmt.Sprintf("records of this session not decoded: more than %d sessions are open at once in this capture", maxLiveDecoders/2))
		return false
	}
	return true
}

// rsess is what replay knows of one session.
type rsess struct {
	id    int
	ended bool
	notes map[string]bool
	// v2 handshake, by direction.
	hs        [3][]byte
	chr       *wire.ClientHelloReader
	chRest    int
	hello     *wire.ClientHello
	chDone    bool
	shr       *wire.ServerHelloReader
	shRest    int
	shDone    bool
	dec       [3]*recDecoder
	streams   map[uint16]*rstream // shared by the links of one resumed session
	link      int                 // ≥ 2: this connection is that link of session of
	of        int
	lastFrame [3]*Frame // last frame captured per direction
	// pendingEOF holds an end of stream to judge at the session's end:
	// the frame taps run in other goroutines than the backend's, so the
	// last frames may be written after the eof line.
	pendingEOF [3]bool
	gap        bool
}

type rstream struct{ fin [3]bool }

// clientDir is the direction the client's flight and frames travel in at
// the capturing side.
func (rp *replayer) clientDir() Dir {
	if rp.hdr.Role == "client" {
		return DirOut
	}
	return DirIn
}

func (rp *replayer) legacy() bool { return rp.hdr.Protocol == "v1" }

func (rp *replayer) header() {
	kind := "ciphertext capture (no keys, no payloads)"
	if rp.hdr.Plaintext {
		kind = "PLAINTEXT capture (session keys and payloads inside)"
	}
	info := fmt.Sprintf("usocks capture version %d, protocol %s, taken at the %s, %s, started %s",
		rp.hdr.Version, rp.hdr.Protocol, rp.hdr.Role, kind, rp.hdr.Start.UTC().Format(time.RFC3339Nano))
	rp.emit(&rline{Line: 1, Kind: "capture", Dir: "-", Info: info})
	switch {
	case rp.hdr.Protocol == "v1" && rp.v1key == nil:
		rp.note(nil, "v1 records are decoded only with --key (the config key); listing captured frames only")
	case rp.hdr.Protocol == "v2" && rp.psk == nil && !rp.hdr.Plaintext:
		rp.note(nil, "no --key: handshakes are not verified and records are not decoded; listing captured frames only")
	case rp.hdr.Protocol == "v2" && rp.psk == nil:
		rp.note(nil, "no --key: handshakes are not verified; records are decoded with the session keys in this file")
	}
}

func (rp *replayer) session(id int) *rsess {
	s := rp.sess[id]
	if s == nil {
		s = &rsess{id: id, notes: map[string]bool{}, streams: map[uint16]*rstream{}}
		rp.sess[id] = s
		rp.order = append(rp.order, s)
		rp.stats.Sessions++
		if rp.legacy() && rp.v1key != nil && rp.roomFor(s) {
			// v1 has no handshake: records start at once.
			s.dec[DirIn], s.dec[DirOut] = newV1Decoder(*rp.v1key, &rp.live), newV1Decoder(*rp.v1key, &rp.live)
		}
	}
	return s
}

func (rp *replayer) event(e *Event) {
	rp.t = e.T
	if e.Layer == LayerClose {
		rp.trail = true
		rp.stats.Dropped = e.Dropped
		rp.emit(&rline{Session: e.Session, Dir: "-", Kind: "close",
			Info: fmt.Sprintf("capture closed: %d events written, %d dropped", e.Events, e.Dropped)})
		if e.Dropped > 0 {
			rp.note(nil, fmt.Sprintf("%d events were dropped (capture queue full): sessions with a drop line have gaps", e.Dropped))
		}
		return
	}
	if e.Session == 0 {
		rp.emit(&rline{Dir: e.Dir.String(), Kind: e.Layer, Info: "file-level event (ignored)"})
		return
	}
	_, known := rp.sess[e.Session]
	s := rp.session(e.Session)
	if !known && e.Layer != LayerOpen {
		rp.note(s, "events before this session's open line (capture started mid-session, or lines lost)")
	}
	if s.ended && e.Layer != LayerDrop {
		rp.note(s, "events after this session's end line")
	}
	switch e.Layer {
	case LayerOpen:
		rp.emit(&rline{Session: s.id, Dir: "-", Kind: "open", Info: "session opened, peer " + e.Peer})
	case LayerHandshake:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "hs", Info: fmt.Sprintf("%d handshake bytes", e.N)})
		rp.handshake(s, e)
	case LayerKeys:
		rp.keys(s, e)
	case LayerBackend:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "backend", Info: fmt.Sprintf("%d bytes of ciphertext", e.N)})
		rp.backend(s, e)
	case LayerFrame:
		rp.frame(s, e)
	case LayerEOF:
		rp.eof(s, e)
	case LayerLink:
		rp.link(s, e)
	case LayerDrop:
		rp.emit(&rline{Session: s.id, Dir: "-", Kind: "drop", Info: fmt.Sprintf("%d events of this session lost here (capture queue full)", e.N)})
		if !s.gap {
			s.gap = true
			for d := range s.dec {
				if s.dec[d] != nil {
					s.dec[d].stop()
				}
			}
			rp.note(s, "the byte stream has a gap here: record decoding of this session stops")
		}
	case LayerEnd:
		for _, d := range []Dir{DirIn, DirOut} {
			if s.pendingEOF[d] {
				s.pendingEOF[d] = false
				lf := s.lastFrame[d]
				rp.judgeEOF(s, d, lf != nil && lf.Type == wire.FrameClose, lf != nil && lf.Type == wire.FrameReset)
			}
		}
		info := "session ended cleanly"
		if e.Result == "error" {
			info = "session ended with an error: " + e.Err
		}
		rp.emit(&rline{Session: s.id, Dir: "-", Kind: "end", Info: info})
		rp.endSession(s)
	default:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "unknown", Info: fmt.Sprintf("unknown layer %q (ignored)", e.Layer)})
	}
}

// link makes s a later link of a resumed session: its streams are the
// session's, carried on from its first connection (SPEC-v2.md §7b).
func (rp *replayer) link(s *rsess, e *Event) {
	s.link, s.of = int(e.N), e.Of
	info := fmt.Sprintf("link %d of session %d (resumed on this connection)", e.N, e.Of)
	if first := rp.sess[e.Of]; first != nil && first != s {
		s.streams = first.streams
	} else {
		info += "; its first connection is not in this capture, so its open streams are unknown"
	}
	rp.emit(&rline{Session: s.id, Dir: "-", Kind: "link", Info: info})
}

func (rp *replayer) endSession(s *rsess) {
	s.ended = true
	for d := range s.dec {
		if dec := s.dec[d]; dec != nil && !dec.finished {
			rp.note(s, "session ended without an eof line for a direction")
			dec.stop()
		}
	}
}

func (rp *replayer) finish() {
	rp.line = 0
	for _, s := range rp.order {
		if !s.ended {
			rp.note(s, "the capture ends before this session did (file cut short, or the capture was still running)")
			for _, d := range s.dec {
				if d != nil {
					d.stop()
				}
			}
		}
	}
	if !rp.trail {
		rp.fail(nil, DirNone, nil, "capture has no close line: the file is truncated or the capturing process did not stop cleanly")
	}
	rp.emit(&rline{Dir: "-", Kind: "summary", Info: fmt.Sprintf("%d sessions, %d events, %d errors, %d events dropped by the capture",
		rp.stats.Sessions, rp.stats.Events, rp.stats.Errors, rp.stats.Dropped)})
}

func (rp *replayer) stopAll() {
	for _, s := range rp.order {
		for _, d := range s.dec {
			if d != nil {
				d.stop()
			}
		}
	}
}
