package frontend

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"strings"

	"usocks/stages"
)

// A plain proxy request ("GET http://host/…") is one request per app
// connection: its origin gets that request and its body, nothing after
// them (a later request on the same keep-alive connection, for any host,
// with its cookies and credentials, must never reach this origin), and the
// app is told "Connection: close" in the response head, so that it sends
// its next request on a new connection, where it is routed on its own.

// bodyFraming is how the end of a request body is found (RFC 9112 §6.3).
type bodyFraming struct {
	chunked bool
	length  int64 // Content-Length, when not chunked
}

// requestFraming reads the body framing of req; a request whose framing
// is ambiguous (both headers, several lengths, a coding other than a
// final chunked) is refused, as a proxy must not guess where it ends.
func requestFraming(req *httpRequest) (bodyFraming, error) {
	var f bodyFraming
	var te, cl []string
	for _, h := range req.Header {
		switch {
		case strings.EqualFold(h.Name, "Transfer-Encoding"):
			te = append(te, h.Value)
		case strings.EqualFold(h.Name, "Content-Length"):
			cl = append(cl, h.Value)
		}
	}
	switch {
	case len(te) > 0 && len(cl) > 0:
		return f, httpErr(400, "both Transfer-Encoding and Content-Length")
	case len(te) > 0:
		codings := strings.Split(strings.Join(te, ","), ",")
		if !strings.EqualFold(strings.TrimSpace(codings[len(codings)-1]), "chunked") {
			return f, httpErr(400, "request body coding must end with chunked")
		}
		f.chunked = true
	case len(cl) > 0:
		for _, v := range cl {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 63)
			if err != nil || n < 0 || strings.TrimSpace(v) == "" || strings.TrimSpace(v)[0] == '+' || (f.length != 0 && n != f.length) {
				return f, httpErr(400, "bad Content-Length")
			}
			f.length = n
		}
	}
	return f, nil
}

// bodyEnd finds the end of one request body in the bytes that follow its
// head, as they arrive.
type bodyEnd struct {
	chunked bool
	state   int
	left    int64  // bytes left in the body (length) or in the chunk
	line    []byte // a chunk-size or trailer line so far
}

const (
	beData      = iota // length body, or a chunk's data
	beSize             // a chunk-size line
	beDataEnd          // the CRLF after a chunk's data
	beTrailer          // trailer lines, up to an empty one
	beDone             // the request is complete
	maxBodyLine = 4096
)

var errBadChunk = errors.New("http: malformed chunked request body")

func newBodyEnd(f bodyFraming) *bodyEnd {
	b := &bodyEnd{chunked: f.chunked, left: f.length}
	switch {
	case f.chunked:
		b.state = beSize
	case f.length == 0:
		b.state = beDone
	}
	return b
}

func (b *bodyEnd) done() bool { return b.state == beDone }

// take returns how many leading bytes of p still belong to the request.
func (b *bodyEnd) take(p []byte) (int, error) {
	n := 0
	for n < len(p) && b.state != beDone {
		switch b.state {
		case beData:
			k := int(min(b.left, int64(len(p)-n)))
			n += k
			b.left -= int64(k)
			if b.left == 0 {
				b.state = beDone
				if b.chunked {
					b.state = beDataEnd
				}
			}
		case beSize, beTrailer, beDataEnd:
			i := bytes.IndexByte(p[n:], '\n')
			if i < 0 {
				b.line = append(b.line, p[n:]...)
				n = len(p)
				if len(b.line) > maxBodyLine {
					return n, errBadChunk
				}
				break
			}
			b.line = append(b.line, p[n:n+i]...)
			n += i + 1
			line := strings.TrimSuffix(string(b.line), "\r")
			b.line = b.line[:0]
			if err := b.endLine(line); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// endLine acts on one whole line of the chunked coding.
func (b *bodyEnd) endLine(line string) error {
	switch b.state {
	case beDataEnd:
		if line != "" {
			return errBadChunk
		}
		b.state = beSize
	case beSize:
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 63)
		if err != nil || n < 0 {
			return errBadChunk
		}
		if n == 0 {
			b.state = beTrailer
		} else {
			b.state, b.left = beData, n
		}
	case beTrailer:
		if line == "" {
			b.state = beDone
		}
	}
	return nil
}

// plainConn is the origin of a plain request as the stream sees it:
// writes (the app's bytes) reach the origin only up to the end of the
// request body and are discarded after it; reads (the origin's bytes)
// carry a response head rewritten to say "Connection: close".
type plainConn struct {
	net.Conn
	body *bodyEnd
	head []byte // the origin's bytes while a head is incomplete
	out  []byte // rewritten head bytes not read yet
	pass bool   // the final response head went out: pass bytes as they are
}

func (c *plainConn) Write(p []byte) (int, error) {
	if c.body.done() {
		return len(p), nil
	}
	n, err := c.body.take(p)
	if n > 0 {
		if _, werr := c.Conn.Write(p[:n]); werr != nil {
			return 0, werr
		}
	}
	if err != nil {
		return n, err
	}
	return len(p), nil
}

// CloseWrite passes the app's FIN on.
func (c *plainConn) CloseWrite() error { return stages.CloseWrite(c.Conn) }

// maxResponseHead bounds a response head the frontend rewrites.
const maxResponseHead = 64 << 10

var errResponseHead = errors.New("http: origin's response head too large or malformed")

func (c *plainConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.pass {
			return c.Conn.Read(p)
		}
		if len(c.head) >= maxResponseHead {
			return 0, errResponseHead
		}
		buf := make([]byte, min(4096, maxResponseHead-len(c.head)))
		n, err := c.Conn.Read(buf)
		c.head = append(c.head, buf[:n]...)
		for !c.pass {
			end := headEnd(c.head)
			if end < 0 {
				break
			}
			head, final := rewriteResponseHead(c.head[:end])
			c.out = append(c.out, head...)
			c.head = c.head[end:]
			if final {
				c.pass = true
				c.out = append(c.out, c.head...)
				c.head = nil
			}
		}
		if len(c.out) == 0 && err != nil {
			if len(c.head) > 0 && !c.pass {
				c.out, c.head, c.pass = c.head, nil, true // the origin ended inside a head: pass on what it sent
				continue
			}
			return 0, err
		}
	}
}

// headEnd is the length of the head at the start of b (through its empty
// line), or -1 while incomplete.
func headEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return i + 4
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return i + 2
	}
	return -1
}

// rewriteResponseHead drops the response's connection headers and says
// "Connection: close"; final is false for an interim (1xx) response,
// which is passed on as it is.
func rewriteResponseHead(h []byte) (out []byte, final bool) {
	lines := strings.Split(strings.TrimRight(string(h), "\r\n"), "\n")
	status := strings.Fields(lines[0])
	if len(status) >= 2 && len(status[1]) == 3 && status[1][0] == '1' && status[1] != "101" {
		return h, false
	}
	drop := map[string]bool{"connection": true, "keep-alive": true, "proxy-connection": true}
	for _, l := range lines[1:] {
		if name, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(name), "Connection") {
			for _, n := range strings.Split(v, ",") {
				if n = strings.ToLower(strings.TrimSpace(n)); n != "close" {
					drop[n] = true
				}
			}
		}
	}
	out = make([]byte, 0, len(h)+20)
	out = append(out, strings.TrimSuffix(lines[0], "\r")...)
	out = append(out, "\r\n"...)
	for _, l := range lines[1:] {
		l = strings.TrimSuffix(l, "\r")
		if name, _, ok := strings.Cut(l, ":"); ok && drop[strings.ToLower(strings.TrimSpace(name))] {
			continue
		}
		out = append(out, l...)
		out = append(out, "\r\n"...)
	}
	return append(out, "Connection: close\r\n\r\n"...), true
}
