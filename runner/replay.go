package runner

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
	v1 "usocks/wire/v1"
)

// Replay: a capture file fed back through the decode stages the runner
// uses. Each session's backend chunks, exactly as captured, go one by one
// into a stages.Decrypt (v2) or stages.DecryptV1 (v1) running on its own
// channels; what the stage taps is printed under the chunk that produced
// it, and a stage error is printed right where the stage stopped. The v2
// handshake flights are opened with wire.ClientHelloReader and
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
	cr, err := NewCaptureReader(r)
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

// rline is one line of the listing; text and JSON are made from it.
type rline struct {
	Line    int          `json:"line"`
	T       *json.Number `json:"t,omitempty"`
	Session int          `json:"session"`
	Dir     string       `json:"dir"`
	Kind    string       `json:"kind"`
	Type    string       `json:"type,omitempty"`
	Stream  *int         `json:"stream,omitempty"`
	Flags   string       `json:"flags,omitempty"`
	Len     *int         `json:"len,omitempty"`
	Pad     *int         `json:"pad,omitempty"`
	Size    *int         `json:"size,omitempty"`
	Data    string       `json:"data,omitempty"`
	Error   string       `json:"error,omitempty"`
	Info    string       `json:"info,omitempty"`
}

type replayer struct {
	o     ReplayOptions
	hdr   CaptureHeader
	psk   *wire.PSK
	v1key *[v1.KeySize]byte
	sess  map[int]*rsess
	order []*rsess
	out   *bufio.Writer
	stats ReplayStats
	line  int
	t     time.Duration
	trail bool
	live  int // decode stages running
}

// maxLiveDecoders bounds the decode stages running at once (two per
// session that has not ended), so a hostile file cannot exhaust memory.
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
	streams   map[uint16]*rstream
	lastFrame [3]*CaptureFrame // last frame captured per direction
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

// emit prints l unless the filters hide it.
func (rp *replayer) emit(l *rline) {
	if l.Line == 0 {
		l.Line = rp.line
	}
	if !rp.o.NoTime && l.Kind != "capture" && l.Kind != "summary" {
		n := json.Number(fmtSeconds(rp.t))
		l.T = &n
	}
	if !rp.shown(l) {
		return
	}
	if rp.o.JSON {
		b, _ := json.Marshal(l)
		_, _ = rp.out.Write(append(b, '\n'))
		return
	}
	var sb strings.Builder
	if l.T != nil {
		fmt.Fprintf(&sb, "%12s ", string(*l.T))
	}
	if l.Kind == "capture" || l.Kind == "summary" {
		fmt.Fprintf(&sb, "%s: %s\n", l.Kind, l.Info)
		_, _ = rp.out.WriteString(sb.String())
		return
	}
	fmt.Fprintf(&sb, "s%-3d %-3s %-7s ", l.Session, l.Dir, l.Kind)
	switch l.Kind {
	case "record", "frame":
		sb.WriteString(l.Type)
		if l.Stream != nil {
			fmt.Fprintf(&sb, " stream=%d", *l.Stream)
		}
		if l.Flags != "" {
			fmt.Fprintf(&sb, " flags=%s", l.Flags)
		}
		if l.Len != nil {
			fmt.Fprintf(&sb, " len=%d", *l.Len)
		}
		if l.Pad != nil {
			fmt.Fprintf(&sb, " pad=%d", *l.Pad)
		}
		if l.Size != nil {
			fmt.Fprintf(&sb, " size=%d", *l.Size)
		}
		if l.Data != "" {
			d := l.Data
			if len(d) > 32 {
				d = d[:32] + fmt.Sprintf("…(%d bytes)", len(l.Data)/2)
			}
			fmt.Fprintf(&sb, " data=%s", d)
		}
		if l.Info != "" {
			sb.WriteString(" " + l.Info)
		}
	case "error":
		sb.WriteString("ERROR " + l.Error)
		if l.Line > 0 {
			fmt.Fprintf(&sb, " (capture line %d)", l.Line)
		}
	default:
		sb.WriteString(l.Info)
	}
	sb.WriteByte('\n')
	_, _ = rp.out.WriteString(sb.String())
}

func (rp *replayer) shown(l *rline) bool {
	if l.Kind == "capture" || l.Kind == "summary" {
		return true
	}
	if rp.o.Dir != DirNone && l.Dir != "-" && l.Dir != rp.o.Dir.String() {
		return false
	}
	if rp.o.Stream >= 0 {
		switch l.Kind {
		case "record", "frame":
			return l.Stream != nil && *l.Stream == rp.o.Stream
		case "hs", "hello", "backend":
			return false
		}
		if l.Stream != nil && *l.Stream != rp.o.Stream {
			return false
		}
	}
	return true
}

func fmtSeconds(d time.Duration) string {
	e := CaptureEvent{T: d}
	b := e.AppendLine(nil)
	s, _, _ := strings.Cut(string(b), " ")
	return s
}

func intp(v int) *int { return &v }

// note prints a session-level remark; once per session and text.
func (rp *replayer) note(s *rsess, text string) {
	id := 0
	if s != nil {
		if s.notes[text] {
			return
		}
		s.notes[text] = true
		id = s.id
	}
	rp.emit(&rline{Session: id, Dir: "-", Kind: "note", Info: text})
}

func (rp *replayer) fail(s *rsess, d Dir, stream *int, msg string) {
	rp.stats.Errors++
	id := 0
	if s != nil {
		id = s.id
	}
	rp.emit(&rline{Session: id, Dir: d.String(), Kind: "error", Stream: stream, Error: msg})
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
			s.dec[DirIn], s.dec[DirOut] = startV1Decoder(*rp.v1key, &rp.live), startV1Decoder(*rp.v1key, &rp.live)
		}
	}
	return s
}

func (rp *replayer) event(e *CaptureEvent) {
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

// handshake verifies the v2 flights with the PSK as their bytes arrive.
func (rp *replayer) handshake(s *rsess, e *CaptureEvent) {
	if rp.legacy() {
		rp.note(s, "handshake bytes in a v1 capture (v1 has no handshake)")
		return
	}
	if len(s.hs[e.Dir]) < 1<<20 {
		s.hs[e.Dir] = append(s.hs[e.Dir], e.Data...)
	}
	if rp.psk == nil {
		return // said in the header notes
	}
	cd := rp.clientDir()
	if e.Dir == cd {
		rp.clientFlight(s, cd)
	} else {
		rp.serverFlight(s, e.Dir)
	}
}

func (rp *replayer) clientFlight(s *rsess, d Dir) {
	buf := s.hs[d]
	if s.chDone {
		if s.hello != nil {
			rp.note(s, "more bytes from the client after its flight, inside the handshake")
		}
		return
	}
	if s.chr == nil {
		if len(buf) < wire.ClientPrefixLen {
			return
		}
		r := wire.NewClientHelloReader(rp.psk)
		rest, err := r.OpenPrefix(buf[:wire.ClientPrefixLen])
		if err != nil {
			s.chDone = true
			rp.fail(s, d, nil, "client hello does not open under this key: wrong --key, or not a usocks v2 client (the server answers such input with silence)")
			return
		}
		s.chr, s.chRest = r, rest
	}
	if len(buf) < wire.ClientPrefixLen+s.chRest {
		return
	}
	s.chDone = true
	h, err := s.chr.OpenRest(buf[wire.ClientPrefixLen : wire.ClientPrefixLen+s.chRest])
	if err != nil {
		rp.fail(s, d, nil, "client hello: its variable part fails authentication (tampered in transit)")
		return
	}
	s.hello = h
	ts := time.Unix(int64(h.Time), 0)
	rp.emit(&rline{Session: s.id, Dir: d.String(), Kind: "hello", Info: fmt.Sprintf(
		"client hello authentic: time %s (%s from capture start), cipher %s, padding %d, flight %d bytes",
		ts.UTC().Format(time.RFC3339), signedSeconds(ts.Sub(rp.hdr.Start.Truncate(time.Second))), h.Cipher, h.PadLen, wire.ClientPrefixLen+s.chRest)})
	if h.Cipher != wire.CipherChaCha20Poly1305 && h.Cipher != wire.CipherAES256GCM {
		rp.fail(s, d, nil, fmt.Sprintf("client hello asks for an unknown cipher %s", h.Cipher))
	}
	if skew := ts.Sub(rp.hdr.Start.Truncate(time.Second)); skew > stages.DefaultSkew+time.Second || skew < -stages.DefaultSkew-time.Second {
		rp.fail(s, d, nil, fmt.Sprintf("client clock differs from the capturing host's by %s: outside the default window of %s", signedSeconds(skew), stages.DefaultSkew))
	}
	if len(buf) > wire.ClientPrefixLen+s.chRest {
		rp.note(s, "more bytes from the client after its flight, inside the handshake")
	}
}

func (rp *replayer) serverFlight(s *rsess, d Dir) {
	if s.shDone {
		if s.shr != nil {
			rp.note(s, "more bytes from the server after its reply, inside the handshake")
		}
		return
	}
	if s.hello == nil {
		rp.note(s, "server reply not verified: the client hello was not verified")
		return
	}
	buf := s.hs[d]
	if s.shr == nil {
		if len(buf) < wire.ServerPrefixLen {
			return
		}
		r := wire.NewServerHelloReader(rp.psk, s.hello.Salt)
		rest, err := r.OpenPrefix(buf[:wire.ServerPrefixLen])
		if err != nil {
			s.shDone = true
			rp.fail(s, d, nil, "server reply does not open under this key for this client hello: wrong key, spliced or replayed reply")
			return
		}
		s.shr, s.shRest = r, rest
	}
	if len(buf) < wire.ServerPrefixLen+s.shRest {
		return
	}
	s.shDone = true
	h, err := s.shr.OpenRest(buf[wire.ServerPrefixLen : wire.ServerPrefixLen+s.shRest])
	if err != nil {
		rp.fail(s, d, nil, "server reply: its variable part fails authentication (tampered in transit)")
		return
	}
	ts := time.Unix(int64(h.Time), 0)
	rp.emit(&rline{Session: s.id, Dir: d.String(), Kind: "hello", Info: fmt.Sprintf(
		"server reply authentic, answers this client's salt: time %s (%s from the client's), padding %d, flight %d bytes",
		ts.UTC().Format(time.RFC3339), signedSeconds(time.Duration(int64(h.Time)-int64(s.hello.Time))*time.Second), h.PadLen, wire.ServerPrefixLen+s.shRest)})
	if !rp.hdr.Plaintext {
		rp.note(s, "records are forward-secret: the PSK opens only the handshake, and the session keys were never written to this ciphertext capture. To decode records, capture with --capture-plaintext (it records the session keys). Listing captured frames only")
	}
}

func signedSeconds(d time.Duration) string {
	d = d.Round(time.Second)
	if d >= 0 {
		return "+" + d.String()
	}
	return d.String()
}

func (rp *replayer) keys(s *rsess, e *CaptureEvent) {
	rp.emit(&rline{Session: s.id, Dir: "-", Kind: "keys", Info: "session data keys (" + e.Cipher + ") recorded by the plaintext capture: records will be decoded"})
	if !rp.hdr.Plaintext {
		rp.fail(s, DirNone, nil, "keys in a capture whose header says plaintext=false: the file was edited or is damaged")
	}
	if rp.legacy() {
		rp.fail(s, DirNone, nil, "v2 keys in a v1 capture (ignored)")
		return
	}
	c, err := wire.ParseCipher(e.Cipher)
	if err != nil || e.Cipher == "auto" || e.Cipher == "" {
		rp.fail(s, DirNone, nil, fmt.Sprintf("keys: unknown cipher %q", e.Cipher))
		return
	}
	in, out := e.S2C, e.C2S
	if rp.hdr.Role == "server" {
		in, out = e.C2S, e.S2C
	}
	for _, dk := range []struct {
		d Dir
		k []byte
	}{{DirIn, in}, {DirOut, out}} {
		d, k := dk.d, dk.k
		if s.dec[d] != nil || s.gap {
			continue
		}
		var key [wire.KeySize]byte
		copy(key[:], k)
		a, err := wire.NewAEAD(c, &key)
		if err != nil {
			rp.fail(s, d, nil, "keys: "+err.Error())
			continue
		}
		if !rp.roomFor(s) {
			return
		}
		s.dec[d] = startV2Decoder(wire.NewOpener(a), &stages.Rekeyer{Cipher: c, Key: key}, &rp.live)
	}
}

func (rp *replayer) backend(s *rsess, e *CaptureEvent) {
	d := s.dec[e.Dir]
	if d == nil {
		// Why not is said once: in the header notes, the forward-secrecy
		// note, or here.
		if !s.gap && rp.hdr.Plaintext && !rp.legacy() {
			rp.note(s, "records not decoded: the capture holds no session keys for this session")
		}
		return
	}
	if d.finished {
		rp.note(s, "more ciphertext after decoding of this direction stopped (not decoded)")
		return
	}
	got, err := d.feed(e.Data)
	rp.printDecoded(s, e.Dir, got, d)
	if err != nil {
		rp.decodeError(s, e.Dir, err)
	}
}

func (rp *replayer) printDecoded(s *rsess, dir Dir, got []decoded, d *recDecoder) {
	for i := range got {
		g := &got[i]
		l := &rline{Session: s.id, Dir: dir.String(), Kind: "record", Type: g.typ.String(), Stream: intp(int(g.stream)),
			Len: intp(g.n)}
		if g.typ == wire.FrameStream {
			l.Flags = g.flags.String()
		}
		if !rp.legacy() { // v1's stage does not report record padding
			l.Pad = intp(g.pad)
			l.Size = intp(wire.RecordOverhead + wire.FrameHeaderLen + g.n + g.pad)
		}
		if g.data != nil {
			l.Data = hex.EncodeToString(g.data)
		}
		if g.typ == wire.FrameWindow && len(g.data) == 4 {
			l.Info = fmt.Sprintf("credit=%d", uint32(g.data[0])<<24|uint32(g.data[1])<<16|uint32(g.data[2])<<8|uint32(g.data[3]))
		}
		rp.emit(l)
	}
	for _, n := range d.takeNotes() {
		rp.fail(s, dir, nil, "decrypt stage: "+n)
	}
}

// decodeError reports the error a decode stage stopped with.
func (rp *replayer) decodeError(s *rsess, d Dir, err error) {
	var msg string
	switch {
	case errors.Is(err, v1.ErrRemoteReset):
		rp.emit(&rline{Session: s.id, Dir: d.String(), Kind: "record", Type: "RESET", Stream: intp(0), Len: intp(0), Info: "(v1 reset record: the sender tore the session down)"})
		s.dec[d].sawReset = true
		return
	case errors.Is(err, wire.ErrAuth):
		msg = "bad tag: record authentication failed; nothing after this point can be trusted (tampering or corruption in transit, or wrong keys)"
	case errors.Is(err, v1.ErrFirstPacketIncorrect):
		msg = err.Error() + ": wrong --key, or not usocks v1 traffic"
	case errors.Is(err, v1.ErrHashFail):
		msg = "bad digest: " + err.Error() + " (tampering or corruption in transit)"
	case errors.Is(err, v1.ErrInvalidHeader):
		msg = "invalid record header: " + err.Error()
	case errors.Is(err, stages.ErrTruncated):
		msg = "truncated: the backend ended inside a record (insecure close: possible truncation)"
	case errors.Is(err, stages.ErrProtocol):
		msg = err.Error()
	default:
		msg = "decode: " + err.Error()
	}
	rp.fail(s, d, nil, msg)
}

func (rp *replayer) frame(s *rsess, e *CaptureEvent) {
	f := e.Frame
	l := &rline{Session: s.id, Dir: e.Dir.String(), Kind: "frame", Type: f.Type.String(), Stream: intp(int(f.Stream)),
		Len: intp(f.Len), Pad: intp(f.Pad)}
	if f.Type == wire.FrameStream {
		l.Flags = f.Flags.String()
	}
	if e.Data != nil {
		l.Data = hex.EncodeToString(e.Data)
	}
	if rp.legacy() {
		l.Pad = nil // v1 frames have no padding field
	}
	rp.emit(l)
	s.lastFrame[e.Dir] = &f
	if msg := rp.track(s, e.Dir, &f); msg != "" {
		rp.fail(s, e.Dir, intp(int(f.Stream)), msg)
	}
}

// track follows stream state as the capturing side saw it and names the
// frames its demux would refuse.
func (rp *replayer) track(s *rsess, d Dir, f *CaptureFrame) string {
	if f.Type != wire.FrameStream {
		return ""
	}
	id := f.Stream
	st := s.streams[id]
	if f.Flags.Has(wire.FlagRST) {
		delete(s.streams, id)
		return ""
	}
	if f.Flags.Has(wire.FlagSYN) {
		if d != rp.clientDir() {
			if d == DirIn {
				return fmt.Sprintf("SYN from the server on stream %d (the client resets it)", id)
			}
			return ""
		}
		if st != nil && !rp.legacy() && d == DirIn {
			delete(s.streams, id)
			return fmt.Sprintf("duplicate SYN on stream %d (the stream is reset)", id)
		}
		st = &rstream{}
		s.streams[id] = st
	}
	if st == nil {
		if d != DirIn {
			return ""
		}
		if rp.legacy() {
			return fmt.Sprintf("message for unknown stream %d (ignored under v1 rules)", id)
		}
		return fmt.Sprintf("unknown stream %d: frame for a stream that is not open (answered with RST)", id)
	}
	if f.Flags.Has(wire.FlagFIN) {
		st.fin[d] = true
		if st.fin[DirIn] && st.fin[DirOut] {
			delete(s.streams, id)
		}
	}
	return ""
}

func (rp *replayer) eof(s *rsess, e *CaptureEvent) {
	var info string
	switch {
	case e.Dir == DirIn && e.Err == "":
		info = "backend reader: EOF"
	case e.Dir == DirIn:
		info = "backend reader stopped: " + e.Err
	case e.Err == "":
		info = "backend writer: FIN sent after the last record"
	default:
		info = "backend writer stopped: " + e.Err
	}
	rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "eof", Info: info})
	d := s.dec[e.Dir]
	if d == nil {
		// Judged from the captured frames when the session ends.
		s.pendingEOF[e.Dir] = e.Err == ""
		return
	}
	if d.finished {
		return // it already stopped, and said why
	}
	got, err := d.finish()
	rp.printDecoded(s, e.Dir, got, d)
	if err != nil {
		rp.decodeError(s, e.Dir, err)
		return
	}
	if e.Err != "" {
		return // cut, not an end of stream
	}
	rp.judgeEOF(s, e.Dir, d.sawClose, d.sawReset || d.lastType == wire.FrameReset)
}

// judgeEOF says how one direction ended: CLOSE then EOF is secure; EOF
// without CLOSE (or RESET) is an insecure close.
func (rp *replayer) judgeEOF(s *rsess, dir Dir, closeSeen, resetSeen bool) {
	e := struct{ Dir Dir }{dir}
	switch {
	case closeSeen:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "note", Info: "secure end of this direction: CLOSE, then end of stream"})
	case resetSeen:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "note", Info: "this direction ended after a RESET"})
	case e.Dir == DirIn:
		rp.fail(s, DirIn, nil, "insecure close: EOF without a CLOSE record (possible truncation); open streams are reset")
	default:
		rp.emit(&rline{Session: s.id, Dir: e.Dir.String(), Kind: "note", Info: "this direction ended without a CLOSE record"})
	}
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

// decoded is what a decode stage tapped of one frame.
type decoded struct {
	typ    wire.FrameType
	flags  wire.Flags
	stream uint16
	n, pad int
	data   []byte
}

// recDecoder runs one decode stage (stages.Decrypt or stages.DecryptV1)
// on its own channels. feed hands it one captured chunk and then an empty
// chunk: both stages treat an empty chunk as "no new bytes", so the
// hand-over of the empty one proves the stage has finished the captured
// one, and every frame it tapped belongs to that chunk. The tap and notes
// are written by the stage goroutine before that hand-over and read by
// the caller after it (channel synchronization, no lock needed).
type recDecoder struct {
	in       chan stages.Chunk
	done     chan struct{}
	err      error
	got      []decoded
	notes    []string
	finished bool
	sawClose bool
	sawReset bool
	lastType wire.FrameType
	cancel   context.CancelFunc
	live     *int // the replayer's count of running stages
}

func newRecDecoder(live *int) (*recDecoder, context.Context, chan stages.Frame) {
	ctx, cancel := context.WithCancel(context.Background())
	*live++
	return &recDecoder{in: make(chan stages.Chunk), done: make(chan struct{}), cancel: cancel, live: live}, ctx, make(chan stages.Frame, 16)
}

// setFinished marks the stage as no longer fed.
func (d *recDecoder) setFinished() {
	if !d.finished {
		d.finished = true
		*d.live--
	}
}

// start runs the stage; its output frames are released (the tap has seen them).
func (d *recDecoder) start(ctx context.Context, out chan stages.Frame, run func(context.Context) error) {
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for f := range out {
			f.Release()
		}
	}()
	go func() {
		err := run(ctx)
		<-drained
		d.err = err
		close(d.done)
	}()
}

func (d *recDecoder) tap(f *wire.Frame, pad int) {
	g := decoded{typ: f.Type, flags: f.Flags, stream: f.Stream, n: len(f.Payload), pad: pad}
	if len(f.Payload) > 0 {
		g.data = append([]byte(nil), f.Payload...)
	}
	d.got = append(d.got, g)
	d.lastType = f.Type
	if f.Type == wire.FrameClose {
		d.sawClose = true
	}
	if f.Type == wire.FrameReset {
		d.sawReset = true
	}
}

// noteHook turns the stage's log warnings into replay errors.
type noteHook struct{ d *recDecoder }

func (h noteHook) Levels() []logrus.Level { return logrus.AllLevels[:logrus.WarnLevel+1] }
func (h noteHook) Fire(e *logrus.Entry) error {
	msg := e.Message
	if err, ok := e.Data[logrus.ErrorKey].(error); ok {
		msg += ": " + err.Error()
	}
	h.d.notes = append(h.d.notes, msg)
	return nil
}

func (d *recDecoder) log() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.WarnLevel)
	l.AddHook(noteHook{d})
	return logrus.NewEntry(l)
}

func startV2Decoder(o *wire.Opener, rk *stages.Rekeyer, live *int) *recDecoder {
	d, ctx, out := newRecDecoder(live)
	st := &stages.Decrypt{Opener: o, Rekey: rk, In: d.in, Out: out, Log: d.log(), Tap: d.tap}
	d.start(ctx, out, st.Run)
	return d
}

func startV1Decoder(key [v1.KeySize]byte, live *int) *recDecoder {
	d, ctx, out := newRecDecoder(live)
	st := &stages.DecryptV1{Opener: v1.NewOpener(key), In: d.in, Out: out, Log: d.log(), Tap: d.tap}
	d.start(ctx, out, st.Run)
	return d
}

func (d *recDecoder) send(c stages.Chunk) bool {
	select {
	case d.in <- c:
		return true
	case <-d.done:
		return false
	}
}

// feed decodes one captured chunk: it returns the frames the stage tapped
// while processing it, and the stage's error if it stopped there.
func (d *recDecoder) feed(b []byte) ([]decoded, error) {
	d.got = d.got[:0]
	if d.send(stages.Chunk{B: b}) && d.send(stages.Chunk{}) {
		return d.got, nil
	}
	d.setFinished()
	d.cancel()
	return d.got, d.err
}

// finish ends the input (end of stream) and returns what the stage did
// then: ErrTruncated for a record cut short (v2), v1's final error.
func (d *recDecoder) finish() ([]decoded, error) {
	d.got = d.got[:0]
	if !d.finished {
		d.setFinished()
		close(d.in)
		<-d.done
		d.cancel()
	}
	return d.got, d.err
}

func (d *recDecoder) takeNotes() []string {
	n := d.notes
	d.notes = nil
	return n
}

// stop ends the stage without judging how the stream ended.
func (d *recDecoder) stop() {
	if d.finished {
		<-d.done
		return
	}
	d.setFinished()
	d.cancel()
	<-d.done
}
