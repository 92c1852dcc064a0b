package runner

import (
	"net"
	"testing"
	"time"
)

// BenchmarkBulkBackends is the download throughput of one stream over each
// v2 backend, in one run: `go test -run='^$' -bench=BulkBackends ./runner/`.
// Nothing here asserts a speed.
func BenchmarkBulkBackends(b *testing.B) {
	for _, bk := range []struct{ name, backend, path string }{
		{"plain_tcp", "", ""}, {"tls", "tls", ""}, {"ws", "ws", "/tunnel"}, {"wss", "tls", "/tunnel"},
	} {
		b.Run(bk.name, func(b *testing.B) {
			tg := startTarget(b)
			tn := startTunnel(b, tunnelOpts{targetPort: tg.port(), backend: bk.backend, path: bk.path})
			tn.waitSession()
			bulkDown(b, func() net.Conn {
				c, err := net.DialTimeout("tcp", tn.cli.Addr().String(), 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				return c
			})
		})
	}
}
