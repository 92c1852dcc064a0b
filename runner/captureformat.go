package runner

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"usocks/wire"
)

// Capture files (format version 1).
//
// A capture taps the stage boundaries of every session of one client or
// server and writes them, one event per line, to a text file that
// `usocks replay` reads back. The format is line oriented and versioned:
//
//	usocks-capture 1 protocol=v2 role=server plaintext=false start=2026-01-02T15:04:05.123456789Z
//	# time session dir layer fields...
//	0.000012 1 - open peer=127.0.0.1:50312
//	0.000097 1 in hs n=75 hex=…
//	0.001800 1 - keys cipher=aes-256-gcm c2s=… s2c=…        (plaintext captures only)
//	0.002011 1 in backend n=40 hex=…
//	0.002034 1 in frame type=STREAM stream=1 flags=SYN len=0 pad=0
//	0.002101 1 out frame type=STREAM stream=1 flags=DAT len=5 pad=0 data=68656c6c6f   (data: plaintext only)
//	0.350000 1 in eof
//	0.350200 1 out eof err="…"
//	0.350300 1 - end result=clean
//	0.400000 0 - close events=1234 dropped=0
//
// The first line is the header: the magic word, the format version, then
// key=value fields (protocol v1|v2, role client|server, plaintext
// true|false, start = wall-clock time of the first event's offset 0 in
// RFC 3339). Lines starting with '#' are comments; empty lines are ignored.
// Every other line is an event:
//
//	TIME SESSION DIR LAYER KEY=VALUE...
//
// TIME is seconds since start with exactly six decimals (a monotonic clock).
// SESSION numbers the backend connections of the file from 1 (0 is the file
// itself). DIR is in (read from the backend), out (written to it) or - .
// A VALUE is a bare word without spaces or quotes, or a Go-quoted string.
// Readers ignore keys they do not know. Layers:
//
//	open     a session begins: peer=ADDR
//	hs       v2 handshake bytes as read or written: n=BYTES hex=HEX
//	keys     v2 data keys, only in a plaintext capture: cipher= c2s=HEX s2c=HEX
//	backend  record-layer ciphertext as read or written: n=BYTES hex=HEX
//	frame    a tunnel frame at the encrypt (out) or decrypt (in) stage:
//	         type= stream= flags= len=PAYLOAD pad=PADDING [data=HEX, plaintext only]
//	eof      the backend reader met EOF (in) or the writer sent FIN (out); err= if it failed
//	drop     n events of this session were lost (queue full) just before here
//	end      the session ended: result=clean|error [err=]
//	close    last line (session 0): events=WRITTEN dropped=LOST
//
// Security: a capture made without plaintext=true never holds a key or any
// payload byte in the clear: backend and hs events are ciphertext as it
// crossed the network, frames carry only their header fields. A plaintext
// capture (asked for explicitly) adds frame payloads and the v2 session
// data keys, so it must be protected like the traffic itself.
//
// Capturing never blocks the data path: taps copy the bytes and offer the
// event to a bounded queue drained by one writer goroutine per file; when
// the queue is full the event is dropped and counted, and the count is
// written as a drop event. With capture off every tap is nil.

// Capture format constants.
const (
	CaptureMagic   = "usocks-capture"
	CaptureVersion = 1
)

// Capture layers (the fourth field of an event line).
const (
	LayerOpen      = "open"
	LayerHandshake = "hs"
	LayerKeys      = "keys"
	LayerBackend   = "backend"
	LayerFrame     = "frame"
	LayerEOF       = "eof"
	LayerDrop      = "drop"
	LayerEnd       = "end"
	LayerClose     = "close"
)

// Limits of the capture queue and of a line.
const (
	captureQueueLen   = 4096
	captureQueueBytes = 64 << 20
	// MaxCaptureLine bounds one line of a capture file.
	MaxCaptureLine = 16 << 20
	maxEventBytes  = (MaxCaptureLine - 256) / 2
)

// Dir is the direction of an event, seen from the capturing side.
type Dir uint8

// Directions.
const (
	DirNone Dir = iota // session-level events
	DirIn              // read from the backend
	DirOut             // written to the backend
)

func (d Dir) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	}
	return "-"
}

// ParseDir reads "in", "out" or "-".
func ParseDir(s string) (Dir, error) {
	switch s {
	case "in":
		return DirIn, nil
	case "out":
		return DirOut, nil
	case "-":
		return DirNone, nil
	}
	return 0, fmt.Errorf("direction %q: want in, out or -", s)
}

// CaptureHeader is the first line of a capture file.
type CaptureHeader struct {
	Version   int
	Protocol  string // v1 or v2
	Role      string // client or server
	Plaintext bool
	Start     time.Time
}

// String formats the header line (without newline).
func (h *CaptureHeader) String() string {
	return fmt.Sprintf("%s %d protocol=%s role=%s plaintext=%t start=%s", CaptureMagic, h.Version,
		h.Protocol, h.Role, h.Plaintext, h.Start.UTC().Format(time.RFC3339Nano))
}

// CaptureFrame is what a frame event records of a frame.
type CaptureFrame struct {
	Type   wire.FrameType
	Flags  wire.Flags
	Stream uint16
	Len    int // payload length
	Pad    int // padding length
}

// CaptureEvent is one event line. Which fields are used depends on Layer.
type CaptureEvent struct {
	T       time.Duration
	Session int
	Dir     Dir
	Layer   string

	N      int64  // hs, backend: byte count; drop: events lost
	Data   []byte // hs, backend: the bytes; frame: payload (plaintext only)
	Frame  CaptureFrame
	Peer   string // open
	Cipher string // keys
	C2S    []byte // keys
	S2C    []byte // keys
	Err    string // eof, end
	Result string // end: clean or error
	// Events and Dropped are the close trailer's totals.
	Events, Dropped int64
}

// AppendLine formats e as one line (without newline) appended to dst.
func (e *CaptureEvent) AppendLine(dst []byte) []byte {
	us := e.T.Microseconds()
	if us < 0 {
		us = 0
	}
	dst = strconv.AppendInt(dst, us/1e6, 10)
	dst = append(dst, '.')
	frac := strconv.AppendInt(nil, us%1e6, 10)
	dst = append(dst, "000000"[len(frac):]...)
	dst = append(dst, frac...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(e.Session), 10)
	dst = append(dst, ' ')
	dst = append(dst, e.Dir.String()...)
	dst = append(dst, ' ')
	dst = append(dst, e.Layer...)
	kv := func(k string, v string) {
		dst = append(dst, ' ')
		dst = append(dst, k...)
		dst = append(dst, '=')
		dst = appendValue(dst, v)
	}
	num := func(k string, v int64) {
		dst = append(dst, ' ')
		dst = append(dst, k...)
		dst = append(dst, '=')
		dst = strconv.AppendInt(dst, v, 10)
	}
	hx := func(k string, b []byte) {
		dst = append(dst, ' ')
		dst = append(dst, k...)
		dst = append(dst, '=')
		dst = hex.AppendEncode(dst, b)
	}
	switch e.Layer {
	case LayerOpen:
		kv("peer", e.Peer)
	case LayerHandshake, LayerBackend:
		num("n", e.N)
		hx("hex", e.Data)
	case LayerKeys:
		kv("cipher", e.Cipher)
		hx("c2s", e.C2S)
		hx("s2c", e.S2C)
	case LayerFrame:
		kv("type", e.Frame.Type.String())
		num("stream", int64(e.Frame.Stream))
		kv("flags", e.Frame.Flags.String())
		num("len", int64(e.Frame.Len))
		num("pad", int64(e.Frame.Pad))
		if e.Data != nil {
			hx("data", e.Data)
		}
	case LayerEOF:
		if e.Err != "" {
			kv("err", e.Err)
		}
	case LayerDrop:
		num("n", e.N)
	case LayerEnd:
		kv("result", e.Result)
		if e.Err != "" {
			kv("err", e.Err)
		}
	case LayerClose:
		num("events", e.Events)
		num("dropped", e.Dropped)
	}
	return dst
}

// appendValue writes v bare if it is a plain word, else Go-quoted.
func appendValue(dst []byte, v string) []byte {
	if v == "" {
		return append(dst, `""`...)
	}
	for _, r := range v {
		if r <= ' ' || r == '"' || r == '\\' || r >= 0x7f {
			return strconv.AppendQuote(dst, v)
		}
	}
	return append(dst, v...)
}

// ErrNotCapture is returned for a file that is not a usocks capture.
var ErrNotCapture = errors.New("not a usocks capture file")

// ParseCaptureHeader reads the header line.
func ParseCaptureHeader(line string) (CaptureHeader, error) {
	var h CaptureHeader
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != CaptureMagic {
		return h, fmt.Errorf("%w (its first line does not start with %q)", ErrNotCapture, CaptureMagic+" ")
	}
	v, err := strconv.Atoi(f[1])
	if err != nil {
		return h, fmt.Errorf("%w: bad version %q", ErrNotCapture, f[1])
	}
	if v != CaptureVersion {
		return h, fmt.Errorf("capture format version %d is not supported (this usocks reads version %d)", v, CaptureVersion)
	}
	h.Version = v
	seen := map[string]bool{}
	for _, kv := range f[2:] {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return h, fmt.Errorf("capture header: %q is not key=value", kv)
		}
		seen[k] = true
		switch k {
		case "protocol":
			if val != "v1" && val != "v2" {
				return h, fmt.Errorf("capture header: protocol %q: want v1 or v2", val)
			}
			h.Protocol = val
		case "role":
			if val != "client" && val != "server" {
				return h, fmt.Errorf("capture header: role %q: want client or server", val)
			}
			h.Role = val
		case "plaintext":
			b, err := strconv.ParseBool(val)
			if err != nil {
				return h, fmt.Errorf("capture header: plaintext %q: want true or false", val)
			}
			h.Plaintext = b
		case "start":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return h, fmt.Errorf("capture header: start %q: %v", val, err)
			}
			h.Start = t
		}
	}
	for _, k := range []string{"protocol", "role", "plaintext", "start"} {
		if !seen[k] {
			return h, fmt.Errorf("capture header: %s missing", k)
		}
	}
	return h, nil
}

// frameTypeByName inverts wire.FrameType.String.
var frameTypeByName = func() map[string]wire.FrameType {
	m := make(map[string]wire.FrameType, 256)
	for i := 0; i < 256; i++ {
		m[wire.FrameType(i).String()] = wire.FrameType(i)
	}
	return m
}()

func parseFlags(s string) (wire.Flags, error) {
	if s == "-" {
		return 0, nil
	}
	var f wire.Flags
	for _, p := range strings.Split(s, "|") {
		switch p {
		case "SYN":
			f |= wire.FlagSYN
		case "DAT":
			f |= wire.FlagDAT
		case "FIN":
			f |= wire.FlagFIN
		case "RST":
			f |= wire.FlagRST
		default:
			v, err := strconv.ParseUint(strings.TrimPrefix(p, "0x"), 16, 8)
			if err != nil || !strings.HasPrefix(p, "0x") {
				return 0, fmt.Errorf("flags %q", s)
			}
			f |= wire.Flags(v)
		}
	}
	return f, nil
}

// splitFields splits "k=v k="quoted v" ..." into pairs.
func splitFields(s string) ([][2]string, error) {
	var out [][2]string
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexByte(s, ' ')
		if eq <= 0 || (sp >= 0 && sp < eq) {
			tok, _, _ := strings.Cut(s, " ")
			return nil, fmt.Errorf("%q is not key=value", tok)
		}
		k := s[:eq]
		s = s[eq+1:]
		var v string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("value of %s: bad quoted string", k)
			}
			if v, err = strconv.Unquote(q); err != nil {
				return nil, fmt.Errorf("value of %s: bad quoted string", k)
			}
			s = s[len(q):]
			if s != "" && s[0] != ' ' {
				return nil, fmt.Errorf("value of %s: junk after quoted string", k)
			}
		} else {
			v, s, _ = strings.Cut(s, " ")
		}
		out = append(out, [2]string{k, v})
	}
}

// ParseCaptureEvent reads one event line (not the header, not a comment).
func ParseCaptureEvent(line string) (CaptureEvent, error) {
	var e CaptureEvent
	parts := strings.SplitN(line, " ", 5)
	if len(parts) < 4 {
		return e, errors.New("too few fields (want: time session dir layer ...)")
	}
	sec, frac, ok := strings.Cut(parts[0], ".")
	if !ok || len(frac) != 6 || sec == "" || len(sec) > 9 {
		return e, fmt.Errorf("time %q: want seconds with six decimals", parts[0])
	}
	s, err1 := strconv.ParseUint(sec, 10, 63)
	us, err2 := strconv.ParseUint(frac, 10, 32)
	if err1 != nil || err2 != nil {
		return e, fmt.Errorf("time %q: want seconds with six decimals", parts[0])
	}
	e.T = time.Duration(s)*time.Second + time.Duration(us)*time.Microsecond
	sess, err := strconv.ParseUint(parts[1], 10, 31)
	if err != nil {
		return e, fmt.Errorf("session %q: want a number", parts[1])
	}
	e.Session = int(sess)
	if e.Dir, err = ParseDir(parts[2]); err != nil {
		return e, err
	}
	e.Layer = parts[3]
	if e.Layer == "" {
		return e, errors.New("empty layer")
	}
	var rest string
	if len(parts) == 5 {
		rest = parts[4]
	}
	fields, err := splitFields(rest)
	if err != nil {
		return e, err
	}
	get := func(k string) (string, bool) {
		for _, f := range fields {
			if f[0] == k {
				return f[1], true
			}
		}
		return "", false
	}
	need := func(k string) (string, error) {
		v, ok := get(k)
		if !ok {
			return "", fmt.Errorf("%s event without %s=", e.Layer, k)
		}
		return v, nil
	}
	num := func(k string, max int64) (int64, error) {
		v, err := need(k)
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > max {
			return 0, fmt.Errorf("%s=%q: want a number 0..%d", k, v, max)
		}
		return n, nil
	}
	hexv := func(k string, required bool) ([]byte, error) {
		v, ok := get(k)
		if !ok {
			if required {
				return nil, fmt.Errorf("%s event without %s=", e.Layer, k)
			}
			return nil, nil
		}
		if len(v) > 2*maxEventBytes {
			return nil, fmt.Errorf("%s= too long", k)
		}
		b, err := hex.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("%s=: bad hex (%v)", k, err)
		}
		return b, nil
	}
	dirs := func(want ...Dir) error {
		for _, d := range want {
			if e.Dir == d {
				return nil
			}
		}
		return fmt.Errorf("%s event with direction %s", e.Layer, e.Dir)
	}
	switch e.Layer {
	case LayerOpen:
		e.Peer, _ = get("peer")
	case LayerHandshake, LayerBackend:
		if err := dirs(DirIn, DirOut); err != nil {
			return e, err
		}
		if e.N, err = num("n", maxEventBytes); err != nil {
			return e, err
		}
		if e.Data, err = hexv("hex", true); err != nil {
			return e, err
		}
		if int64(len(e.Data)) != e.N {
			return e, fmt.Errorf("n=%d but hex= holds %d bytes (line cut short?)", e.N, len(e.Data))
		}
		if e.N == 0 {
			return e, fmt.Errorf("%s event of 0 bytes", e.Layer)
		}
	case LayerKeys:
		if e.Cipher, err = need("cipher"); err != nil {
			return e, err
		}
		if e.C2S, err = hexv("c2s", true); err != nil {
			return e, err
		}
		if e.S2C, err = hexv("s2c", true); err != nil {
			return e, err
		}
		if len(e.C2S) != wire.KeySize || len(e.S2C) != wire.KeySize {
			return e, fmt.Errorf("keys of %d and %d bytes, want %d", len(e.C2S), len(e.S2C), wire.KeySize)
		}
	case LayerFrame:
		if err := dirs(DirIn, DirOut); err != nil {
			return e, err
		}
		tn, err := need("type")
		if err != nil {
			return e, err
		}
		t, ok := frameTypeByName[tn]
		if !ok {
			return e, fmt.Errorf("frame type %q", tn)
		}
		e.Frame.Type = t
		st, err := num("stream", 0xffff)
		if err != nil {
			return e, err
		}
		e.Frame.Stream = uint16(st)
		fl, err := need("flags")
		if err != nil {
			return e, err
		}
		if e.Frame.Flags, err = parseFlags(fl); err != nil {
			return e, err
		}
		l, err := num("len", maxEventBytes)
		if err != nil {
			return e, err
		}
		p, err := num("pad", wire.MaxBodyLen)
		if err != nil {
			return e, err
		}
		e.Frame.Len, e.Frame.Pad = int(l), int(p)
		if e.Data, err = hexv("data", false); err != nil {
			return e, err
		}
		if e.Data != nil && len(e.Data) != e.Frame.Len {
			return e, fmt.Errorf("len=%d but data= holds %d bytes", e.Frame.Len, len(e.Data))
		}
	case LayerEOF:
		if err := dirs(DirIn, DirOut); err != nil {
			return e, err
		}
		e.Err, _ = get("err")
	case LayerDrop:
		if e.N, err = num("n", 1<<62); err != nil {
			return e, err
		}
	case LayerEnd:
		if e.Result, err = need("result"); err != nil {
			return e, err
		}
		if e.Result != "clean" && e.Result != "error" {
			return e, fmt.Errorf("result=%q: want clean or error", e.Result)
		}
		e.Err, _ = get("err")
	case LayerClose:
		if e.Events, err = num("events", 1<<62); err != nil {
			return e, err
		}
		if e.Dropped, err = num("dropped", 1<<62); err != nil {
			return e, err
		}
	}
	return e, nil
}

// CaptureReader reads a capture file event by event.
type CaptureReader struct {
	br     *bufio.Reader
	line   int
	Header CaptureHeader
}

// LineError is a bad line: the reader skips it and can go on.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// errTruncatedLine marks a last line without its newline.
var errTruncatedLine = errors.New("last line is incomplete (no end of line): the file was cut short")

// NewCaptureReader reads and checks the header.
func NewCaptureReader(r io.Reader) (*CaptureReader, error) {
	cr := &CaptureReader{br: bufio.NewReaderSize(r, 64<<10)}
	line, err := cr.readLine()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file is empty", ErrNotCapture)
		}
		if errors.Is(err, errTruncatedLine) || errors.Is(err, bufio.ErrTooLong) {
			if !strings.HasPrefix(string(line), CaptureMagic+" ") {
				return nil, fmt.Errorf("%w (its first line does not start with %q)", ErrNotCapture, CaptureMagic+" ")
			}
		} else {
			return nil, err
		}
	}
	h, herr := ParseCaptureHeader(string(line))
	if herr != nil {
		return nil, herr
	}
	if err != nil {
		return nil, fmt.Errorf("capture header: %w", err)
	}
	cr.Header = h
	return cr, nil
}

// readLine returns the next line without its newline. At the end of the
// file it returns io.EOF; a last line without newline comes with
// errTruncatedLine; a line over MaxCaptureLine with bufio.ErrTooLong.
func (r *CaptureReader) readLine() ([]byte, error) {
	var buf []byte
	for {
		frag, err := r.br.ReadSlice('\n')
		if len(buf)+len(frag) > MaxCaptureLine {
			// Skip the rest of this line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.br.ReadSlice('\n')
			}
			r.line++
			return nil, bufio.ErrTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			r.line++
			return bytes.TrimSuffix(buf[:len(buf)-1], []byte{'\r'}), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(buf) == 0 {
				return nil, io.EOF
			}
			r.line++
			return buf, errTruncatedLine
		default:
			return nil, err
		}
	}
}

// Line is the number of the line last read (the header is line 1).
func (r *CaptureReader) Line() int { return r.line }

// Next returns the next event. It returns io.EOF at the end, a *LineError
// for a line it cannot use (call Next again to go on), or another error
// when the file cannot be read any further.
func (r *CaptureReader) Next() (CaptureEvent, error) {
	for {
		line, err := r.readLine()
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return CaptureEvent{}, io.EOF
			case errors.Is(err, bufio.ErrTooLong):
				return CaptureEvent{}, &LineError{r.line, fmt.Errorf("line longer than %d bytes", MaxCaptureLine)}
			case errors.Is(err, errTruncatedLine):
				e, perr := ParseCaptureEvent(string(line))
				if perr != nil {
					return CaptureEvent{}, &LineError{r.line, err}
				}
				return e, nil // a whole event that merely lacks its newline
			}
			return CaptureEvent{}, err
		}
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		e, perr := ParseCaptureEvent(string(line))
		if perr != nil {
			return e, &LineError{r.line, perr}
		}
		return e, nil
	}
}
