package frontend

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
)

// The HTTP proxy frontend: CONNECT (any TCP through the proxy, what
// browsers use for https) and plain requests in absolute form
// ("GET http://host/path HTTP/1.1"), forwarded in origin form. A plain
// request is one request per connection: the frontend adds
// "Connection: close" both ways, and the origin gets that request and its
// body and nothing after them (httpplain.go).

// MaxHTTPHead bounds an HTTP request head (request line and headers).
const MaxHTTPHead = 16 << 10

// maxHTTPHeaders bounds the header lines of one request, and
// maxLeadingEmptyLines the empty lines tolerated before it. Together they
// bound how often readHTTPHead parses a growing head.
const (
	maxHTTPHeaders       = 100
	maxLeadingEmptyLines = 8
)

// errHeadIncomplete means the empty line ending the head has not arrived.
var errHeadIncomplete = errors.New("http: request head incomplete")

// httpError is a request answered with Status and then a close.
type httpError struct {
	Status int
	Msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("http %d: %s", e.Status, e.Msg) }

func httpErr(status int, format string, args ...any) *httpError {
	return &httpError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// httpHeader is one header line.
type httpHeader struct{ Name, Value string }

// httpRequest is a parsed request head.
type httpRequest struct {
	Method, Target, Proto string
	Header                []httpHeader
}

// Get returns the first value of the named header (case-insensitive).
func (r *httpRequest) Get(name string) (string, bool) {
	for _, h := range r.Header {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// proxyTarget is where a proxy request goes and, for a plain request, the
// head to send there.
type proxyTarget struct {
	Host    string
	Port    uint16
	Connect bool   // CONNECT: answer 200, then tunnel
	Head    []byte // plain request: the rewritten head for the origin
	Body    bodyFraming
}

// hopHeaders are dropped from forwarded requests (with any named in
// Connection). Host is replaced by the target's authority.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization",
	"Proxy-Authenticate", "TE", "Upgrade", "Host",
}

// routeHTTPRequest decides where req goes and builds the head to forward.
// Errors are *httpError.
func routeHTTPRequest(req *httpRequest) (proxyTarget, error) {
	if req.Method == "CONNECT" {
		host, port, err := parseAuthority(req.Target, 0)
		if err != nil {
			return proxyTarget{}, err
		}
		return proxyTarget{Host: host, Port: port, Connect: true}, nil
	}
	if req.Method == "TRACE" {
		// TRACE would echo the app's headers back (cross-site tracing).
		return proxyTarget{}, httpErr(405, "TRACE is not forwarded")
	}
	scheme, rest, ok := strings.Cut(req.Target, "://")
	if !ok || !isToken([]byte(scheme)) {
		return proxyTarget{}, httpErr(400, "request target must be an absolute http:// URI (or use CONNECT)")
	}
	if !strings.EqualFold(scheme, "http") {
		return proxyTarget{}, httpErr(501, "scheme %q not supported; use CONNECT", scheme)
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, path := rest[:end], rest[end:]
	if strings.Contains(authority, "@") {
		return proxyTarget{}, httpErr(400, "user information in URI")
	}
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path = path[:i]
	}
	if path == "" || path[0] == '?' {
		path = "/" + path
	}
	host, port, err := parseAuthority(authority, 80)
	if err != nil {
		return proxyTarget{}, err
	}
	body, err := requestFraming(req)
	if err != nil {
		return proxyTarget{}, err
	}
	drop := map[string]bool{}
	for _, h := range hopHeaders {
		drop[strings.ToLower(h)] = true
	}
	for _, h := range req.Header {
		if strings.EqualFold(h.Name, "Connection") {
			for _, name := range strings.Split(h.Value, ",") {
				drop[strings.ToLower(strings.TrimSpace(name))] = true
			}
		}
	}
	head := make([]byte, 0, 256)
	head = append(head, req.Method...)
	head = append(head, ' ')
	head = append(head, path...)
	head = append(head, ' ')
	head = append(head, req.Proto...)
	head = append(head, "\r\nHost: "...)
	head = append(head, authority...)
	head = append(head, "\r\n"...)
	for _, h := range req.Header {
		if drop[strings.ToLower(h.Name)] {
			continue
		}
		head = append(head, h.Name...)
		head = append(head, ": "...)
		head = append(head, h.Value...)
		head = append(head, "\r\n"...)
	}
	head = append(head, "Connection: close\r\n\r\n"...)
	return proxyTarget{Host: host, Port: port, Head: head, Body: body}, nil
}

// httpStatus maps a dial failure to the proxy's answer.
func httpStatus(f dialFailure) int {
	switch f {
	case failDenied:
		return 403
	case failTimeout:
		return 504
	}
	return 502
}

var statusText = map[int]string{
	400: "Bad Request",
	403: "Forbidden",
	405: "Method Not Allowed",
	407: "Proxy Authentication Required",
	431: "Request Header Fields Too Large",
	501: "Not Implemented",
	502: "Bad Gateway",
	504: "Gateway Timeout",
	505: "HTTP Version Not Supported",
}

// appendHTTPError encodes a complete error response (it closes the
// connection).
func appendHTTPError(b []byte, status int, msg string) []byte {
	text := statusText[status]
	if text == "" {
		text = "Error"
	}
	body := "usocks: " + msg + "\n"
	b = fmt.Appendf(b, "HTTP/1.1 %d %s\r\n", status, text)
	switch status {
	case 407:
		b = append(b, "Proxy-Authenticate: Basic realm=\"usocks\"\r\n"...)
	case 405:
		b = append(b, "Allow: CONNECT, GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\n"...)
	}
	b = append(b, "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// HTTPProxy is the HTTP proxy frontend.
type HTTPProxy struct {
	// Dialer connects to targets (nil: defaults with the default deny).
	Dialer *Dialer
	// Users, if not empty, requires Proxy-Authorization: Basic.
	Users map[string]string
	// HandshakeTimeout bounds the wait for the request head (default
	// defaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	Log              *logrus.Entry
}

// httpHead is a read request head and what came after it.
type httpHead struct {
	req  *httpRequest
	rest []byte
}

// readHTTPHead reads from r until a request head is complete, at most
// MaxHTTPHead bytes. Bytes read past the head are returned as rest.
func readHTTPHead(r io.Reader) (*httpRequest, []byte, error) {
	buf := make([]byte, 0, MaxHTTPHead)
	for {
		if len(buf) == cap(buf) {
			return nil, nil, httpErr(431, "request head larger than %d bytes", MaxHTTPHead)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		if n > 0 {
			fresh := buf[len(buf) : len(buf)+n]
			buf = buf[:len(buf)+n]
			if bytes.IndexByte(fresh, '\n') < 0 {
				// No line ended: only the new bytes need a look. (Parsing
				// the whole buffer on every read would be quadratic for
				// an app that sends a byte at a time.)
				if perr := checkPartialLine(fresh); perr != nil {
					return nil, nil, perr
				}
				if len(buf) > n && buf[len(buf)-n-1] == '\r' {
					return nil, nil, httpErr(400, "control character 0x0d in request head")
				}
				if err != nil {
					return nil, nil, err
				}
				continue
			}
			req, hl, perr := parseHTTPHead(buf)
			if perr == nil {
				return req, buf[hl:], nil
			}
			if !errors.Is(perr, errHeadIncomplete) {
				return nil, nil, perr
			}
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// Open reads the app's request from s, answers it and returns the target
// connection. Refusals answer with an error status and then end the
// stream with a FIN.
func (f *HTTPProxy) Open(ctx context.Context, s stages.StreamIO) (net.Conn, error) {
	log := frontendLog(f.Log).WithFields(logrus.Fields{"stream": s.ID(), "frontend": "http"})
	h, err := readRequest(ctx, f.HandshakeTimeout, func() (httpHead, error) {
		req, rest, err := readHTTPHead(s)
		return httpHead{req, rest}, err
	})
	var he *httpError
	if errors.As(err, &he) {
		log.WithError(err).Debug("http request refused")
		return f.refuse(s, he.Status, he.Msg)
	}
	if err != nil {
		return nil, err
	}
	if len(f.Users) > 0 && !f.authorized(h.req) {
		if _, ok := h.req.Get("Proxy-Authorization"); ok {
			log.Info("http proxy authentication failed")
		}
		return f.refuse(s, 407, "proxy authentication required")
	}
	t, err := routeHTTPRequest(h.req)
	if errors.As(err, &he) {
		log.WithError(err).Debug("http request refused")
		return f.refuse(s, he.Status, he.Msg)
	}
	if err != nil {
		return nil, err
	}
	log = log.WithField("target", net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))))
	d := dialerOr(f.Dialer)
	c, err := d.Dial(ctx, t.Host, t.Port)
	if err != nil {
		fail := classifyDialError(err)
		if fail == failDenied {
			log.WithError(err).Info("http proxy target denied")
		} else {
			log.WithError(err).Debug("http proxy dial failed")
		}
		return f.refuse(s, httpStatus(fail), fail.String())
	}
	if t.Connect {
		if _, err := s.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			_ = c.Close()
			return nil, err
		}
	} else {
		// One request per connection: only this request's body goes to
		// this origin (httpplain.go).
		body := newBodyEnd(t.Body)
		n, err := body.take(h.rest)
		if err != nil {
			_ = c.Close()
			return f.refuse(s, 400, "malformed chunked request body")
		}
		h.rest = append(t.Head, h.rest[:n]...)
		if err := writeEarly(c, h.rest, d.Timeout); err != nil {
			_ = c.Close()
			return f.refuse(s, 502, "writing the request to the target failed")
		}
		return &plainConn{Conn: c, body: body}, nil
	}
	if err := writeEarly(c, h.rest, d.Timeout); err != nil {
		_ = c.Close()
		return nil, err // the app already has its 200: reset
	}
	return c, nil
}

func (f *HTTPProxy) authorized(req *httpRequest) bool {
	v, ok := req.Get("Proxy-Authorization")
	if !ok {
		return false
	}
	scheme, cred, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(dec), ":")
	return ok && checkCredentials(f.Users, user, pass)
}

func (f *HTTPProxy) refuse(s stages.StreamIO, status int, msg string) (net.Conn, error) {
	if _, err := s.Write(appendHTTPError(nil, status, msg)); err != nil {
		return nil, err
	}
	return closedConn{}, nil
}
