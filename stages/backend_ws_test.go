package stages

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// visitorConn is a peer whose whole input is known: reads drain in, then
// EOF (the visitor half-closed); writes collect in out.
type visitorConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *visitorConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *visitorConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *visitorConn) Close() error                     { return nil }
func (c *visitorConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *visitorConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *visitorConn) SetDeadline(time.Time) error      { return nil }
func (c *visitorConn) SetReadDeadline(time.Time) error  { return nil }
func (c *visitorConn) SetWriteDeadline(time.Time) error { return nil }

// acceptScript runs AcceptWS on a peer that sends in; it returns AcceptWS's
// results and what the peer received before the first byte of tunnel data.
func acceptScript(t *testing.T, in []byte, path string) (net.Conn, *PrefixConn, []byte, error) {
	t.Helper()
	c := &visitorConn{in: bytes.NewReader(in)}
	wc, pc, err := AcceptWS(c, path, time.Now().Add(5*time.Second))
	return wc, pc, bytes.Clone(c.out.Bytes()), err
}

// FuzzAcceptWS: whatever reaches a ws backend, the server either upgrades
// a GET of the tunnel path with a correct 101 (and nothing else written),
// or writes nothing at all and hands the web site exactly the bytes it
// read, in order.
//
//	go test ./stages/ -run '^$' -fuzz '^FuzzAcceptWS$' -fuzztime 10s
func FuzzAcceptWS(f *testing.F) {
	up := "GET /t HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	for _, s := range []string{up, up + "\x82\x05hello", strings.Replace(up, "/t ", "/ ", 1), strings.Replace(up, "13", "8", 1),
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "\x16\x03\x01\x00\x10", "", strings.Replace(up, "GET", "POST", 1)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		wc, pc, out, err := acceptScript(t, in, "/t")
		req, perr := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
		if err == nil {
			if wc == nil || pc != nil {
				t.Fatalf("upgrade returned conn %v and visitor %v", wc, pc)
			}
			if perr != nil || req.Method != http.MethodGet || req.URL.Path != "/t" {
				t.Fatalf("upgraded a request that is not a GET of the path: %q", in)
			}
			sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			want := "HTTP/1.1 101 Switching Protocols\r\n"
			resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), req)
			if !bytes.HasPrefix(out, []byte(want)) || rerr != nil ||
				resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
				t.Fatalf("upgrade answered %q", out)
			}
			return
		}
		if wc != nil || pc == nil {
			t.Fatalf("failed upgrade (%v) returned conn %v and visitor %v", err, wc, pc)
		}
		if len(out) != 0 {
			t.Fatalf("a visitor got %q before the web site", out)
		}
		if seen := pc.Seen(); !bytes.HasPrefix(in, seen) {
			t.Fatalf("the web site would get %q, the visitor sent %q", seen, in)
		}
		if errors.Is(err, ErrNotWebSocket) && perr != nil {
			t.Fatalf("%q called a request that is not one: %v", in, perr)
		}
	})
}

// A frame cut off by the connection's end yields an error and none of its
// bytes: the library returns what it read of the frame still masked, which
// would reach the record layer as a record that fails authentication
// instead of the backend's end. Whole frames before it arrive unmasked.
func TestWSConnDropsCutFrame(t *testing.T) {
	up := "GET /t HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	key := []byte{0x5a, 0xa5, 0x3c, 0xc3}
	frame := func(payload []byte, length int) []byte {
		f := append([]byte{0x82, 0x80 | byte(length)}, key...)
		for i, b := range payload {
			f = append(f, b^key[i%4])
		}
		return f
	}
	in := append([]byte(up), frame([]byte("hello"), 5)...)
	in = append(in, frame(bytes.Repeat([]byte{'x'}, 50), 100)...) // cut: 50 of 100 bytes
	wc, _, _, err := acceptScript(t, in, "/t")
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 256)
	for {
		n, err := wc.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Fatalf("a cut frame read as a clean end")
			}
			if n != 0 {
				t.Fatalf("a failed read returned %d bytes", n)
			}
			break
		}
	}
	if string(got) != "hello" {
		t.Fatalf("read %q; want the whole frame and nothing of the cut one", got)
	}
}
