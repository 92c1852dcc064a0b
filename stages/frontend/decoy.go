package frontend

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"time"
)

// The built-in web site of the TLS backend (SPEC-v2.md §3a), the last
// resort when no fallback web server is configured: whatever reaches a TLS
// listener and is not a usocks v2 client — a browser, curl, a prober — gets
// a static server that answers as the nginx it names (server_tokens off)
// would serving one page: the same status lines, header order, ETag and
// Last-Modified, 304s, single byte ranges (206, 416), error pages byte for
// byte, 400 for a request
// without Host or that is not HTTP, 405 for methods other than GET and
// HEAD, 505 for other HTTP versions, keep-alive as nginx decides it.

// DefaultDecoyPage is served when no decoy file is configured.
const DefaultDecoyPage = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Welcome</title></head>
<body><h1>It works!</h1><p>This server is up and running.</p></body></html>
`

// Decoy bounds: requests per connection and time for all of them.
const (
	decoyMaxRequests = 16
	decoyTimeout     = 30 * time.Second
)

// Decoy is the built-in web site: one page, served at / and /index.html.
type Decoy struct {
	Page []byte
	// Modified is the page's modification time (its file's, or the
	// server's start): nginx derives ETag and Last-Modified from it.
	Modified time.Time
}

// etag is nginx's: hex modification time, hex size.
func (d *Decoy) etag() string {
	return fmt.Sprintf(`"%x-%x"`, d.Modified.Unix(), len(d.Page))
}

// Serve answers c as the web site; seen holds the bytes already read from
// c. It serves at most a few requests within decoyTimeout, then closes c.
func (d *Decoy) Serve(c net.Conn, seen []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(decoyTimeout))
	if len(seen) > 0 && !looksLikeHTTP(seen) {
		// nginx answers a garbage request line at once.
		writeNginxError(c, http.StatusBadRequest, "", true)
		linger(c)
		return
	}
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(seen), c))
	for i := 0; i < decoyMaxRequests; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			if err != io.EOF {
				writeNginxError(c, http.StatusBadRequest, "", true)
				linger(c)
			}
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(req.Body, 1<<20))
		_ = req.Body.Close()
		if !d.answer(c, req, req.Close || i == decoyMaxRequests-1) {
			linger(c)
			return
		}
	}
}

// answer writes the response to req and reports whether the connection
// stays open.
func (d *Decoy) answer(w io.Writer, req *http.Request, closeAfter bool) bool {
	p := req.URL.Path
	clean := path.Clean("/" + p)
	switch {
	case req.ProtoMajor != 1:
		writeNginxError(w, http.StatusHTTPVersionNotSupported, "", true)
		return false
	case req.ProtoMinor >= 1 && req.Host == "", aboveRoot(p):
		writeNginxError(w, http.StatusBadRequest, "", true)
		return false
	case req.Method != http.MethodGet && req.Method != http.MethodHead:
		writeNginxError(w, http.StatusMethodNotAllowed, "", closeAfter)
	case clean != "/" && (clean != "/index.html" || strings.HasSuffix(p, "/")):
		writeNginxError(w, http.StatusNotFound, "", closeAfter)
	default:
		d.writePage(w, req, closeAfter)
	}
	return !closeAfter
}

// writePage writes 200 (or 304 for a matching conditional request) with
// nginx's headers in nginx's order.
func (d *Decoy) writePage(w io.Writer, req *http.Request, closeAfter bool) {
	lastMod := d.Modified.UTC().Format(http.TimeFormat)
	var b strings.Builder
	notModified := d.notModified(req)
	body := d.Page
	from, to, ranged := 0, 0, false
	if !notModified && req.Method == http.MethodGet {
		var ok bool
		if from, to, ranged, ok = byteRange(req.Header.Get("Range"), len(d.Page)); !ok {
			writeNginxError(w, http.StatusRequestedRangeNotSatisfiable, "", closeAfter, fmt.Sprintf("Content-Range: bytes */%d", len(d.Page)))
			return
		}
	}
	switch {
	case notModified:
		b.WriteString("HTTP/1.1 304 Not Modified\r\n")
	case ranged:
		b.WriteString("HTTP/1.1 206 Partial Content\r\n")
		body = d.Page[from : to+1]
	default:
		b.WriteString("HTTP/1.1 200 OK\r\n")
	}
	fmt.Fprintf(&b, "Server: nginx\r\nDate: %s\r\n", time.Now().UTC().Format(http.TimeFormat))
	if !notModified {
		fmt.Fprintf(&b, "Content-Type: text/html\r\nContent-Length: %d\r\n", len(body))
	}
	fmt.Fprintf(&b, "Last-Modified: %s\r\nConnection: %s\r\nETag: %s\r\n", lastMod, connection(closeAfter), d.etag())
	switch {
	case ranged:
		fmt.Fprintf(&b, "Content-Range: bytes %d-%d/%d\r\n", from, to, len(d.Page))
	case !notModified:
		b.WriteString("Accept-Ranges: bytes\r\n")
	}
	b.WriteString("\r\n")
	out := []byte(b.String())
	if !notModified && req.Method != http.MethodHead {
		out = append(out, body...)
	}
	_, _ = w.Write(out)
}

// byteRange reads a single-range Range header as nginx does for a file of
// size bytes: "bytes=a-b", "bytes=a-" or "bytes=-n". ranged is false for no
// header or one nginx ignores (malformed, several ranges: then the whole
// page); ok is false for a range that cannot be satisfied (416).
func byteRange(h string, size int) (from, to int, ranged, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, true
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, true
	}
	num := func(s string) (int, bool) {
		n := 0
		for _, c := range s {
			if c < '0' || c > '9' || n > 1<<40 {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, s != ""
	}
	switch {
	case a == "":
		n, okN := num(b)
		if !okN {
			return 0, 0, false, true
		}
		if n == 0 {
			return 0, 0, false, false
		}
		return max(size-n, 0), size - 1, true, true
	default:
		start, okA := num(a)
		if !okA {
			return 0, 0, false, true
		}
		end := size - 1
		if b != "" {
			e, okB := num(b)
			if !okB || e < start {
				return 0, 0, false, true
			}
			end = min(e, size-1)
		}
		if start >= size {
			return 0, 0, false, false
		}
		return start, end, true, true
	}
}

// notModified is nginx's not-modified filter (if_modified_since exact):
// each conditional header present must say "not modified".
func (d *Decoy) notModified(req *http.Request) bool {
	ims, inm := req.Header.Get("If-Modified-Since"), req.Header.Get("If-None-Match")
	if ims == "" && inm == "" {
		return false
	}
	if ims != "" {
		t, err := http.ParseTime(ims)
		if err != nil || !t.Equal(d.Modified.Truncate(time.Second)) {
			return false
		}
	}
	if inm != "" && strings.TrimSpace(inm) != "*" {
		match := false
		for _, e := range strings.Split(inm, ",") {
			if strings.TrimPrefix(strings.TrimSpace(e), "W/") == d.etag() {
				match = true
			}
		}
		return match
	}
	return true
}

// aboveRoot reports whether dot segments take p above the root, which
// nginx refuses with 400 (inside the root it resolves them).
func aboveRoot(p string) bool {
	depth := 0
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			if depth == 0 {
				return true
			}
			depth--
		default:
			depth++
		}
	}
	return false
}

// linger ends a connection after a final response as nginx's lingering
// close does: half-close, then read and discard for a while, so that
// unread input does not turn the close into a reset.
func linger(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

func connection(closeAfter bool) string {
	if closeAfter {
		return "close"
	}
	return "keep-alive"
}

// nginxReason is nginx's reason phrase where it differs from Go's.
func nginxReason(code int) string {
	if code == http.StatusMethodNotAllowed {
		return "Not Allowed"
	}
	return http.StatusText(code)
}

// writeNginxError writes nginx's error response: its headers in its order
// and its error page, byte for byte. detail, if set, is the explanation
// nginx puts in the title and below the heading (the plain-HTTP 400).
func writeNginxError(w io.Writer, code int, detail string, closeAfter bool, extraHeaders ...string) {
	status := fmt.Sprintf("%d %s", code, nginxReason(code))
	title, extra := status, ""
	if detail != "" {
		title = fmt.Sprintf("%d %s", code, detail)
		extra = "<center>" + detail + "</center>\r\n"
	}
	body := "<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n<center><h1>" + status +
		"</h1></center>\r\n" + extra + "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %s\r\nServer: nginx\r\nDate: %s\r\n", status, time.Now().UTC().Format(http.TimeFormat))
	fmt.Fprintf(&b, "Content-Type: text/html\r\nContent-Length: %d\r\nConnection: %s\r\n", len(body), connection(closeAfter))
	for _, h := range extraHeaders {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	_, _ = io.WriteString(w, b.String())
}

// plainHTTPDetail is nginx's explanation for plain HTTP on its TLS port.
const plainHTTPDetail = "The plain HTTP request was sent to HTTPS port"

// ServePlainHTTP answers a connection to the TLS port that did not start
// with a TLS handshake, as nginx does: a complete HTTP request head gets
// 400 "The plain HTTP request was sent to HTTPS port", anything else a
// plain 400; then it closes c. seen holds the bytes already read.
func ServePlainHTTP(c net.Conn, seen []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(decoyTimeout))
	detail := ""
	if looksLikeHTTP(seen) {
		br := bufio.NewReader(io.MultiReader(bytes.NewReader(seen), c))
		if _, err := http.ReadRequest(br); err == nil {
			detail = plainHTTPDetail
		} else if err == io.EOF || err == io.ErrUnexpectedEOF {
			return
		}
	}
	writeNginxError(c, http.StatusBadRequest, detail, true)
	linger(c)
}

// looksLikeHTTP reports whether b starts like an HTTP request line: a
// method token of capital letters, then a space.
func looksLikeHTTP(b []byte) bool {
	for i, ch := range b {
		switch {
		case ch >= 'A' && ch <= 'Z' && i < 16:
		case ch == ' ' && i > 0:
			return true
		default:
			return false
		}
	}
	return true // too short to tell: read on
}
