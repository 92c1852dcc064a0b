package runner

import (
	"context"
	"crypto/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"usocks/internal/redistest"
	"usocks/stages"
	"usocks/wire"
)

// BenchmarkHandshakes measures complete v2 handshakes per second against a
// server on loopback, with the local salt store and with the shared one
// (redis-server on loopback): the store's share is one round trip.
//
//	go test -run XXX -bench Handshakes -benchtime 3s ./runner/
func BenchmarkHandshakes(b *testing.B) {
	b.Run("local", func(b *testing.B) { benchHandshakes(b, ScaleOutConfig{}) })
	b.Run("redis", func(b *testing.B) {
		rs := redistest.Start(b)
		benchHandshakes(b, ScaleOutConfig{ReplayStore: rs.URL(0)})
	})
}

func benchHandshakes(b *testing.B, so ScaleOutConfig) {
	tg := startTarget(b)
	key := newKey(b)
	srv, _, _ := startReplica(b, &ServerConfig{Common: Common{Key: key}, ProbeTimeout: time.Second, ScaleOutConfig: so, MaxPending: 4096}, tg.port())
	srv.log.Logger.SetLevel(0) // panic level only: no log formatting in the loop
	ctx := context.Background()
	psk, err := wire.ParseKey(key)
	if err != nil {
		b.Fatal(err)
	}
	handshake := func() error {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		hs := &stages.ClientHandshake{PSK: &psk, Cipher: wire.CipherChaCha20Poly1305, Rand: rand.Reader, Now: time.Now, Timeout: 5 * time.Second}
		_, err = hs.Run(ctx, c)
		return err
	}
	// Warm up: the first handshake also loads the store's script.
	waitFor(b, "a first handshake", 5*time.Second, func() bool { return handshake() == nil })
	const workers = 8
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if handshake() != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d handshakes failed", f, b.N)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "handshakes/s")
}
