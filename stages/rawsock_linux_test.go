package stages

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPairTCP is tcpPair's two ends as TCP sockets.
func tcpPairTCP(t *testing.T) (a, b *net.TCPConn) {
	c, s := tcpPair(t)
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// rawSockOf is newRawSock without the race-detector switch: the tests
// exercise the raw path in every build (each buffer is touched by one
// goroutine only, so the detector has nothing to miss).
func rawSockOf(t *testing.T, c *net.TCPConn) *rawSock {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rawSockOn(rc)
}

func TestRawSockOnlyTCP(t *testing.T) {
	a, _ := net.Pipe()
	defer a.Close()
	if newRawSock(a) != nil {
		t.Error("a pipe got a raw socket")
	}
	c, _ := tcpPairTCP(t)
	if got := newRawSock(c); (got != nil) != (rawSocketsOn && !raceEnabled) {
		t.Errorf("TCP with race detector %v, raw sockets %v: raw socket %v", raceEnabled, rawSocketsOn, got != nil)
	}
}

// TestRawSockBulk writes 8 MiB in vectored writes of uneven (some empty)
// buffers to a reader that reads slowly at first, so writes stop short
// and wait for room; every byte arrives, SHA-256 checked, then EOF.
func TestRawSockBulk(t *testing.T) {
	c, s := tcpPairTCP(t)
	w, r := rawSockOf(t, c), rawSockOf(t, s)
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	want := sha256.Sum256(data)
	got := make(chan [sha256.Size]byte, 1)
	go func() {
		h := sha256.New()
		buf := make([]byte, 3000)
		time.Sleep(50 * time.Millisecond) // let the sender fill the socket
		for {
			n, err := r.Read(buf)
			h.Write(buf[:n])
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("read: %v", err)
				}
				break
			}
		}
		var sum [sha256.Size]byte
		h.Sum(sum[:0])
		got <- sum
	}()
	var total int64
	for off, step := 0, 1; off < len(data); step++ {
		var bufs net.Buffers
		for k := 0; k < 5 && off < len(data); k++ {
			n := min(len(data)-off, (step*k*4099)%70000)
			bufs = append(bufs, data[off:off+n])
			off += n
		}
		n, err := w.writev(&bufs)
		if err != nil {
			t.Fatal(err)
		}
		if len(bufs) != 0 {
			t.Fatalf("writev left %d buffers", len(bufs))
		}
		total += n
	}
	if total != int64(len(data)) {
		t.Fatalf("wrote %d of %d bytes", total, len(data))
	}
	if err := w.closeWrite(); err != nil { // the reader sees EOF
		t.Fatal(err)
	}
	if sum := <-got; sum != want {
		t.Error("the bytes read differ from those written")
	}
}

// TestRawSockManyBuffers: one writev of more buffers than one system call
// takes (IOV_MAX, 1024), some empty, to a reader that lets the socket
// fill, so calls stop short inside the list and at its 1024-buffer cuts;
// the bytes arrive in order, each buffer's once.
func TestRawSockManyBuffers(t *testing.T) {
	c, s := tcpPairTCP(t)
	w, r := rawSockOf(t, c), rawSockOf(t, s)
	var bufs net.Buffers
	var all []byte
	for i := range 3000 {
		b := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, (i*37)%1500)
		bufs = append(bufs, b)
		all = append(all, b...)
	}
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(20 * time.Millisecond) // let the sender fill the socket
		b, err := io.ReadAll(r)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- b
	}()
	n, err := w.writev(&bufs)
	if err != nil || n != int64(len(all)) || len(bufs) != 0 {
		t.Fatalf("writev: %d of %d bytes, %d buffers left, %v", n, len(all), len(bufs), err)
	}
	if err := w.closeWrite(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, all) {
		t.Errorf("read %d bytes, not the %d written", len(b), len(all))
	}
}

func TestRawSockDeadlineAndClose(t *testing.T) {
	c, s := tcpPairTCP(t)
	r := rawSockOf(t, c)
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Errorf("empty read: %d, %v", n, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if n, err := r.Read(buf); err != nil || !bytes.Equal(buf[:n], []byte("hello")) {
		t.Errorf("read %q, %v", buf[:n], err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on a closed socket: %v", err)
	}
	if _, err := r.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write on a closed socket: %v", err)
	}
	if err := r.closeWrite(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("half-close of a closed socket: %v", err)
	}
}

// TestRawSockReadBuf: the buffer comes from the pool only with data, of
// the class asked for; EOF gives no buffer.
func TestRawSockReadBuf(t *testing.T) {
	c, s := tcpPairTCP(t)
	r := rawSockOf(t, c)
	for _, tc := range []struct {
		msg   string
		n     int
		small bool
	}{{"tiny", 100, true}, {"a frame's worth", 5000, false}} {
		if _, err := s.Write([]byte(tc.msg)); err != nil {
			t.Fatal(err)
		}
		buf, m, err := r.readBuf(tc.n)
		if err != nil || buf == nil || string(buf.B[:m]) != tc.msg || buf.small != tc.small || len(buf.B) < tc.n {
			t.Fatalf("%s: m %d err %v buf %v", tc.msg, m, err, buf != nil)
		}
		putBuf(buf)
	}
	s.Close()
	if buf, m, err := r.readBuf(100); buf != nil || m != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("at EOF: buf %v m %d err %v", buf != nil, m, err)
	}
}

func TestRawSockReset(t *testing.T) {
	c, s := tcpPairTCP(t)
	_ = s.SetLinger(0)
	s.Close()
	r := rawSockOf(t, c)
	var err error
	for range 100 { // the reset may take a moment to arrive
		if _, err = r.Write(make([]byte, 1000)); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) {
		t.Errorf("write to a reset socket: %v (want a syscall error)", err)
	}
}

func TestConsume(t *testing.T) {
	for _, tc := range []struct {
		bufs []string
		n    int64
		want []string
	}{
		{[]string{"abc", "de"}, 0, []string{"abc", "de"}},
		{[]string{"abc", "de"}, 2, []string{"c", "de"}},
		{[]string{"abc", "de"}, 3, []string{"de"}},
		{[]string{"abc", "", "de"}, 4, []string{"e"}},
		{[]string{"abc", "de"}, 5, nil},
	} {
		var b net.Buffers
		for _, s := range tc.bufs {
			b = append(b, []byte(s))
		}
		consume(&b, tc.n)
		var got []string
		for _, x := range b {
			got = append(got, string(x))
		}
		if len(got) != len(tc.want) || (len(got) > 0 && string(bytes.Join(b, []byte("|"))) != string(bytes.Join(toBytes(tc.want), []byte("|")))) {
			t.Errorf("consume(%q, %d) = %q, want %q", tc.bufs, tc.n, got, tc.want)
		}
	}
}

func toBytes(s []string) [][]byte {
	var out [][]byte
	for _, x := range s {
		out = append(out, []byte(x))
	}
	return out
}
