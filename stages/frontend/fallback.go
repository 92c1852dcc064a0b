package frontend

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Fallback is a real web server behind the TLS backend (SPEC-v2.md §3a):
// every TLS visitor that is not a usocks client is handed to it after TLS
// termination, with the bytes already read replayed first, so that what a
// browser or prober sees is that server's own answers, byte for byte.
type Fallback struct {
	// Addr is the upstream's host:port (cleartext HTTP/1.1, and HTTP/2
	// with prior knowledge if h2 is offered in ALPN).
	Addr string
	// Timeout bounds the connect to the upstream.
	Timeout time.Duration
	// Idle closes a visitor's connection after this long without a byte
	// either way (default 5 minutes).
	Idle time.Duration
}

// Serve splices c to the upstream until both directions end, then closes
// c; seen holds the bytes already read from c. If the upstream cannot be
// reached, c gets the 502 page a reverse proxy (nginx) would send.
func (f *Fallback) Serve(c net.Conn, seen []byte) {
	defer c.Close()
	up, err := net.DialTimeout("tcp", f.Addr, f.Timeout)
	if err != nil {
		_ = c.SetDeadline(time.Now().Add(decoyTimeout))
		writeNginxError(c, http.StatusBadGateway, "", true)
		return
	}
	defer up.Close()
	idle := f.Idle
	if idle == 0 {
		idle = 5 * time.Minute
	}
	if len(seen) > 0 {
		_ = up.SetWriteDeadline(time.Now().Add(idle))
		if _, err := up.Write(seen); err != nil {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pump(up, c, idle) }()
	go func() { defer wg.Done(); pump(c, up, idle) }()
	wg.Wait()
}

// pump copies src to dst with an idle deadline, then half-closes dst (or
// closes it, if it cannot half-close). If dst stops taking bytes (the
// upstream answered and closed), the rest of src is read and dropped, so
// that the answer still reaches the visitor through the other pump.
func pump(dst, src net.Conn, idle time.Duration) {
	buf := make([]byte, 32<<10)
	sink := false
	for {
		_ = src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 && !sink {
			_ = dst.SetWriteDeadline(time.Now().Add(idle))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				sink = true
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = dst.Close()
				return
			}
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return
			}
			_ = dst.Close()
			return
		}
	}
}
