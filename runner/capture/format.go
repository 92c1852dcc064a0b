package capture

import (
	"encoding/hex"
	"fmt"
	"strconv"
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
//	link     this connection carries link N (2, 3, …) of the resumable
//	         session whose first connection is session S: of=S n=N
//	         (SPEC-v2.md §7b; the link ends with its own end line)
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
	Magic   = "usocks-capture"
	Version = 1
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
	LayerLink      = "link"
)

// Limits of the capture queue and of a line.
const (
	queueLen   = 4096
	queueBytes = 64 << 20
	// MaxLine bounds one line of a capture file.
	MaxLine       = 16 << 20
	maxEventBytes = (MaxLine - 256) / 2
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

// Header is the first line of a capture file.
type Header struct {
	Version   int
	Protocol  string // v1 or v2
	Role      string // client or server
	Plaintext bool
	Start     time.Time
}

// String formats the header line (without newline).
func (h *Header) String() string {
	return fmt.Sprintf("%s %d protocol=%s role=%s plaintext=%t start=%s", Magic, h.Version,
		h.Protocol, h.Role, h.Plaintext, h.Start.UTC().Format(time.RFC3339Nano))
}

// Frame is what a frame event records of a frame.
type Frame struct {
	Type   wire.FrameType
	Flags  wire.Flags
	Stream uint16
	Len    int // payload length
	Pad    int // padding length
}

// Event is one event line. Which fields are used depends on Layer.
type Event struct {
	T       time.Duration
	Session int
	Dir     Dir
	Layer   string

	N      int64  // hs, backend: byte count; drop: events lost
	Data   []byte // hs, backend: the bytes; frame: payload (plaintext only)
	Frame  Frame
	Peer   string // open
	Of     int    // link: the session's first connection
	Cipher string // keys
	C2S    []byte // keys
	S2C    []byte // keys
	Err    string // eof, end
	Result string // end: clean or error
	// Events and Dropped are the close trailer's totals.
	Events, Dropped int64
}

// AppendLine formats e as one line (without newline) appended to dst.
func (e *Event) AppendLine(dst []byte) []byte {
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
	case LayerLink:
		num("of", int64(e.Of))
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
