package runner

import (
	"encoding/binary"
	"flag"
	"io"
	"testing"
	"time"
)

// policyBytes is the download of BenchmarkPolicyDownload: 1 GiB by
// default, the figure SPEC-v2.md §7a and the README quote.
var policyBytes = flag.Int64("policy-bytes", 1<<30, "BenchmarkPolicyDownload: bytes per download")

// BenchmarkPolicyDownload is what one long download costs under each
// defence policy, measured on the wire: a counting relay sits between
// client and server, the target sends policyBytes, and the benchmark
// reports the wire bytes each way against the payload (down-%: bytes the
// server sent beyond the payload, as a share of it; up-B: everything the
// client sent) and the time. One op is one whole download:
//
//	go test -run='^$' -bench=PolicyDownload -benchtime=1x ./runner/
//
// Nothing here asserts a cost; the figures go in notes and the README.
func BenchmarkPolicyDownload(b *testing.B) {
	for _, policy := range []string{"off", "light", "standard", "max"} {
		b.Run(policy, func(b *testing.B) {
			tg := startTarget(b)
			tn := startTunnel(b, tunnelOpts{targetPort: tg.port(), relay: true, defense: policy})
			defer tn.stop()
			tn.waitSession()
			size := *policyBytes
			b.SetBytes(size)
			var wire, up int64
			var took time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				down0, up0 := tn.relay.s2c.Load(), tn.relay.c2s.Load()
				start := time.Now()
				downloadOnce(b, tn, size)
				took += time.Since(start)
				wire += tn.relay.s2c.Load() - down0
				up += tn.relay.c2s.Load() - up0
			}
			b.StopTimer()
			payload := float64(size) * float64(b.N)
			b.ReportMetric(100*(float64(wire)-payload)/payload, "down-%")
			b.ReportMetric(float64(up)/float64(b.N), "up-B/op")
			b.ReportMetric(took.Seconds()/float64(b.N), "s/download")
		})
	}
}

// downloadOnce asks the target for size bytes through the tunnel and
// reads them all.
func downloadOnce(b *testing.B, tn *tunnel, size int64) {
	c := tn.dial(modeSource)
	defer c.Close()
	if _, err := c.Write(binary.BigEndian.AppendUint64(nil, uint64(size))); err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != size {
		b.Fatalf("got %d of %d bytes, err %v", n, size, err)
	}
}
