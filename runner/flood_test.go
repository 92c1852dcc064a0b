package runner

import (
	"context"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestJunkFloodStaysBounded opens 2,000 junk connections to the server at
// once — each sends fewer bytes than a first flight's fixed part and then
// waits, so each one waits for the whole (long) deadline — while a
// legitimate client reconnects and uses the tunnel. Memory stays bounded,
// the junk never holds the real client off (the pool ends its oldest
// waiting connections instead), and no connection is refused.
func TestJunkFloodStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test skipped in -short mode")
	}
	const junk = 2000
	const slots = 1024 // fewer than the junk: the pool evicts
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), probe: 30 * time.Second, relay: true, maxPending: slots,
		// A second ahead: a first flight stamped in the server's first
		// second would be refused (stale) and then wait out the 30 s.
		clientNow: func() time.Time { return time.Now().Add(time.Second) }})
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
			_, _ = c.Write(randomBytes(1 + i%58))
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
	waitFor(t, "the junk to fill the pool", 10*time.Second, func() bool { return tn.srv.waiting.len() == slots })
	// A legitimate session, new after the flood, still connects and works.
	start := time.Now()
	tn.relay.cut()
	tn.waitSession()
	took := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 1<<20, 42); err != nil {
		t.Fatalf("legitimate stream during the flood: %v", err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d junk connections (< 59 bytes each): new session after %v; heap in use grew by %.1f MiB; evicted %d, waiting %d",
		junk, took.Round(time.Millisecond), float64(grown)/(1<<20), tn.srv.Evicted(), tn.srv.waiting.len())
	if grown > 256<<20 {
		t.Fatalf("heap grew by %d MiB under a flood of %d junk connections", grown>>20, junk)
	}
	// The mechanism: the junk never made the pool refuse anyone; room was
	// made by ending the oldest waiting connections.
	if ev := tn.srv.Evicted(); ev < junk-slots {
		t.Fatalf("evicted %d, want at least %d", ev, junk-slots)
	}
	// waitSession bounds the reconnect at 10 s; junk that held handshake
	// slots for the 30 s deadline would have exceeded it.
	if took > 2*time.Second {
		t.Logf("note: the new session took %v (> 2 s) on this machine", took)
	}
}
