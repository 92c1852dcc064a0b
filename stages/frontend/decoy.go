package frontend

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// The decoy web site of the TLS backend (SPEC-v2.md §3a): whatever reaches
// a TLS listener and is not a usocks v2 client — a browser, curl, a prober —
// gets a small static web server.

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

// ServeDecoy answers c as a small static web server: GET or HEAD of / gets
// page, other paths 404, other methods 405, anything that is not HTTP 400;
// seen holds the bytes already read from c. It serves at most a few
// requests within decoyTimeout, then closes c.
func ServeDecoy(c net.Conn, seen []byte, page []byte) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(decoyTimeout))
	if len(seen) > 0 && !looksLikeHTTP(seen) {
		// A web server answers a garbage request line at once.
		writeDecoy(c, http.StatusBadRequest, nil, false, true)
		return
	}
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(seen), c))
	for i := 0; i < decoyMaxRequests; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			if err != io.EOF {
				writeDecoy(c, http.StatusBadRequest, nil, false, true)
			}
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(req.Body, 1<<20))
		_ = req.Body.Close()
		closeAfter := req.Close || i == decoyMaxRequests-1
		switch {
		case req.Method != http.MethodGet && req.Method != http.MethodHead:
			writeDecoy(c, http.StatusMethodNotAllowed, nil, false, closeAfter)
		case req.URL.Path != "/" && req.URL.Path != "/index.html":
			writeDecoy(c, http.StatusNotFound, nil, false, closeAfter)
		default:
			writeDecoy(c, http.StatusOK, page, req.Method == http.MethodHead, closeAfter)
		}
		if closeAfter {
			return
		}
	}
}

func writeDecoy(w io.Writer, code int, body []byte, head, closeAfter bool) {
	if body == nil {
		body = []byte(fmt.Sprintf("<html><body><h1>%d %s</h1></body></html>\n", code, http.StatusText(code)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().UTC().Format(http.TimeFormat))
	b.WriteString("Server: nginx\r\nContent-Type: text/html; charset=utf-8\r\n")
	fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	if closeAfter {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	out := []byte(b.String())
	if !head {
		out = append(out, body...)
	}
	_, _ = w.Write(out)
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
