package capture

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"usocks/wire"
)

// Parsing capture lines: the header, and event lines through a table of
// layers, each with the directions it may have and the parser of its
// key=value fields.

// ErrNotCapture is returned for a file that is not a usocks capture.
var ErrNotCapture = errors.New("not a usocks capture file")

// ParseHeader reads the header line.
func ParseHeader(line string) (Header, error) {
	var h Header
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != Magic {
		return h, fmt.Errorf("%w (its first line does not start with %q)", ErrNotCapture, Magic+" ")
	}
	v, err := strconv.Atoi(f[1])
	if err != nil {
		return h, fmt.Errorf("%w: bad version %q", ErrNotCapture, f[1])
	}
	if v != Version {
		return h, fmt.Errorf("capture format version %d is not supported (this usocks reads version %d)", v, Version)
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

// flagNames maps each named flag bit to its name as wire.Flags prints it
// (every flag the wire package knows, so a new one is never a bad line).
var flagNames = func() map[string]wire.Flags {
	m := make(map[string]wire.Flags)
	for i := 0; i < 8; i++ {
		f := wire.Flags(1 << i)
		if name := f.String(); !strings.HasPrefix(name, "0x") {
			m[name] = f
		}
	}
	return m
}()

func parseFlags(s string) (wire.Flags, error) {
	if s == "-" {
		return 0, nil
	}
	var f wire.Flags
	for _, p := range strings.Split(s, "|") {
		if named, ok := flagNames[p]; ok {
			f |= named
			continue
		}
		v, err := strconv.ParseUint(strings.TrimPrefix(p, "0x"), 16, 8)
		if err != nil || !strings.HasPrefix(p, "0x") {
			return 0, fmt.Errorf("flags %q", s)
		}
		f |= wire.Flags(v)
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

// ParseEvent reads one event line (not the header, not a comment): the
// four fixed fields, then the key=value fields of its layer, parsed by
// the layer's entry in layers. Lines of layers this reader does not know
// are accepted with their fields unread (the format lets readers skip
// what they do not know).
func ParseEvent(line string) (Event, error) {
	var e Event
	rest, err := parseFixed(&e, line)
	if err != nil {
		return e, err
	}
	kv, err := splitFields(rest)
	if err != nil {
		return e, err
	}
	l, ok := layers[e.Layer]
	if !ok {
		return e, nil
	}
	if l.inOut && e.Dir != DirIn && e.Dir != DirOut {
		return e, fmt.Errorf("%s event with direction %s", e.Layer, e.Dir)
	}
	return e, l.parse(&e, fields{layer: e.Layer, kv: kv})
}

// layer is how one layer's event lines are read.
type layer struct {
	inOut bool // the direction must be in or out
	parse func(e *Event, f fields) error
}

var layers = map[string]layer{
	LayerOpen:      {parse: parseOpen},
	LayerHandshake: {inOut: true, parse: parseBytes},
	LayerKeys:      {parse: parseKeys},
	LayerBackend:   {inOut: true, parse: parseBytes},
	LayerFrame:     {inOut: true, parse: parseFrame},
	LayerEOF:       {inOut: true, parse: parseEOF},
	LayerDrop:      {parse: parseDrop},
	LayerEnd:       {parse: parseEnd},
	LayerLink:      {parse: parseLink},
	LayerClose:     {parse: parseClose},
}

// parseFixed reads TIME SESSION DIR LAYER into e and returns the rest.
func parseFixed(e *Event, line string) (string, error) {
	parts := strings.SplitN(line, " ", 5)
	if len(parts) < 4 {
		return "", errors.New("too few fields (want: time session dir layer ...)")
	}
	t, err := parseTime(parts[0])
	if err != nil {
		return "", err
	}
	e.T = t
	sess, err := strconv.ParseUint(parts[1], 10, 31)
	if err != nil {
		return "", fmt.Errorf("session %q: want a number", parts[1])
	}
	e.Session = int(sess)
	if e.Dir, err = ParseDir(parts[2]); err != nil {
		return "", err
	}
	e.Layer = parts[3]
	if e.Layer == "" {
		return "", errors.New("empty layer")
	}
	if len(parts) == 5 {
		return parts[4], nil
	}
	return "", nil
}

// parseTime reads seconds with exactly six decimals.
func parseTime(s string) (time.Duration, error) {
	bad := fmt.Errorf("time %q: want seconds with six decimals", s)
	sec, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 6 || sec == "" || len(sec) > 9 {
		return 0, bad
	}
	n, err1 := strconv.ParseUint(sec, 10, 63)
	us, err2 := strconv.ParseUint(frac, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, bad
	}
	return time.Duration(n)*time.Second + time.Duration(us)*time.Microsecond, nil
}

// fields are the key=value pairs of one event line.
type fields struct {
	layer string
	kv    [][2]string
}

func (f fields) get(k string) (string, bool) {
	for _, p := range f.kv {
		if p[0] == k {
			return p[1], true
		}
	}
	return "", false
}

func (f fields) need(k string) (string, error) {
	v, ok := f.get(k)
	if !ok {
		return "", fmt.Errorf("%s event without %s=", f.layer, k)
	}
	return v, nil
}

// num reads a required number in 0..max.
func (f fields) num(k string, max int64) (int64, error) {
	v, err := f.need(k)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > max {
		return 0, fmt.Errorf("%s=%q: want a number 0..%d", k, v, max)
	}
	return n, nil
}

// hex reads hex bytes; an absent optional key gives nil.
func (f fields) hex(k string, required bool) ([]byte, error) {
	v, ok := f.get(k)
	if !ok {
		if required {
			return nil, fmt.Errorf("%s event without %s=", f.layer, k)
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

func parseOpen(e *Event, f fields) error {
	e.Peer, _ = f.get("peer")
	return nil
}

// parseBytes reads hs and backend events: n=BYTES hex=HEX.
func parseBytes(e *Event, f fields) error {
	var err error
	if e.N, err = f.num("n", maxEventBytes); err != nil {
		return err
	}
	if e.Data, err = f.hex("hex", true); err != nil {
		return err
	}
	if int64(len(e.Data)) != e.N {
		return fmt.Errorf("n=%d but hex= holds %d bytes (line cut short?)", e.N, len(e.Data))
	}
	if e.N == 0 {
		return fmt.Errorf("%s event of 0 bytes", e.Layer)
	}
	return nil
}

func parseKeys(e *Event, f fields) error {
	var err error
	if e.Cipher, err = f.need("cipher"); err != nil {
		return err
	}
	if e.C2S, err = f.hex("c2s", true); err != nil {
		return err
	}
	if e.S2C, err = f.hex("s2c", true); err != nil {
		return err
	}
	if len(e.C2S) != wire.KeySize || len(e.S2C) != wire.KeySize {
		return fmt.Errorf("keys of %d and %d bytes, want %d", len(e.C2S), len(e.S2C), wire.KeySize)
	}
	return nil
}

func parseFrame(e *Event, f fields) error {
	tn, err := f.need("type")
	if err != nil {
		return err
	}
	t, ok := frameTypeByName[tn]
	if !ok {
		return fmt.Errorf("frame type %q", tn)
	}
	st, err := f.num("stream", 0xffff)
	if err != nil {
		return err
	}
	fl, err := f.need("flags")
	if err != nil {
		return err
	}
	flags, err := parseFlags(fl)
	if err != nil {
		return err
	}
	l, err := f.num("len", maxEventBytes)
	if err != nil {
		return err
	}
	p, err := f.num("pad", wire.MaxBodyLen)
	if err != nil {
		return err
	}
	e.Frame = Frame{Type: t, Flags: flags, Stream: uint16(st), Len: int(l), Pad: int(p)}
	if e.Data, err = f.hex("data", false); err != nil {
		return err
	}
	if e.Data != nil && len(e.Data) != e.Frame.Len {
		return fmt.Errorf("len=%d but data= holds %d bytes", e.Frame.Len, len(e.Data))
	}
	return nil
}

func parseEOF(e *Event, f fields) error {
	e.Err, _ = f.get("err")
	return nil
}

func parseDrop(e *Event, f fields) (err error) {
	e.N, err = f.num("n", 1<<62)
	return err
}

func parseLink(e *Event, f fields) error {
	of, err := f.num("of", 1<<31-1)
	if err != nil {
		return err
	}
	e.Of = int(of)
	if e.N, err = f.num("n", 1<<31-1); err == nil && e.N < 2 {
		err = fmt.Errorf("n=%d: a link of a resumed session is 2 or more", e.N)
	}
	return err
}

func parseEnd(e *Event, f fields) error {
	var err error
	if e.Result, err = f.need("result"); err != nil {
		return err
	}
	if e.Result != "clean" && e.Result != "error" {
		return fmt.Errorf("result=%q: want clean or error", e.Result)
	}
	e.Err, _ = f.get("err")
	return nil
}

func parseClose(e *Event, f fields) error {
	var err error
	if e.Events, err = f.num("events", 1<<62); err != nil {
		return err
	}
	e.Dropped, err = f.num("dropped", 1<<62)
	return err
}
