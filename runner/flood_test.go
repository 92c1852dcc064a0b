package runner

import (
	"context"
	"crypto/rand"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestJunkFloodStaysBounded opens a bounded number of junk connections to
// the server at once — each sends 100 random bytes and then waits — while
// a legitimate client keeps using the tunnel. Memory stays bounded and the
// legitimate client still connects.
func TestJunkFloodStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test skipped in -short mode")
	}
	const junk = 2000
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), probe: 2 * time.Second, relay: true})
	tn.waitSession()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	conns := make(chan net.Conn, junk)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < junk; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", tn.serverAddr(), 5*time.Second)
			if err != nil {
				return
			}
			b := make([]byte, 100)
			_, _ = rand.Read(b)
			_, _ = c.Write(b)
			conns <- c
		}()
	}
	wg.Wait()
	close(conns)
	defer func() {
		for c := range conns {
			_ = c.Close()
		}
	}()
	// A legitimate session, new after the flood, still connects and works.
	tn.relay.cut()
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 1<<20, 42); err != nil {
		t.Fatalf("legitimate stream during the flood: %v", err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d junk connections: heap in use grew by %.1f MiB; rejected %d, refused %d",
		junk, float64(grown)/(1<<20), tn.srv.Rejected.Load(), tn.srv.Refused.Load())
	if grown > 256<<20 {
		t.Fatalf("heap grew by %d MiB under a flood of %d junk connections", grown>>20, junk)
	}
	if tn.srv.Sessions.Load() < 2 {
		t.Fatal("the legitimate client did not get a new session during the flood")
	}
}
