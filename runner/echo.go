package runner

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"

	"usocks/stages"
)

// EchoServer is a TCP echo target on loopback, used by the demo and the
// end-to-end tests: it writes back every byte it reads and half-closes
// when the reader does.
type EchoServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

// StartEcho listens on 127.0.0.1 on a free port.
func StartEcho() (*EchoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &EchoServer{ln: ln}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}()
		}
	}()
	return e, nil
}

// Addr is the echo server's address.
func (e *EchoServer) Addr() string { return e.ln.Addr().String() }

// Close stops the listener and waits for open connections to finish.
func (e *EchoServer) Close() {
	_ = e.ln.Close()
	e.wg.Wait()
}

// Pattern fills b with a deterministic pseudo-random stream for seed.
func Pattern(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}

// ErrEchoMismatch is an echo that did not return exactly what was sent.
var ErrEchoMismatch = errors.New("echoed data differs from what was sent")

// EchoCheck sends n pattern bytes for seed over c, half-closes, reads the
// echo to EOF and compares SHA-256 digests and lengths: every byte is
// checked. It returns the number of bytes echoed.
func EchoCheck(ctx context.Context, c net.Conn, n int, seed uint64) (int64, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	payload := make([]byte, n)
	Pattern(payload, seed)
	want := sha256.Sum256(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = stages.CloseWrite(c)
		}
		werr <- err
	}()
	h := sha256.New()
	got, rerr := io.Copy(h, c)
	if err := <-werr; err != nil {
		return got, fmt.Errorf("write: %w", err)
	}
	if rerr != nil {
		return got, fmt.Errorf("read: %w", rerr)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	if got != int64(n) || sum != want {
		return got, fmt.Errorf("%w: sent %d bytes, got %d", ErrEchoMismatch, n, got)
	}
	return got, nil
}
