package runner

import (
	"sort"
	"testing"
	"time"
)

// BenchmarkTTFBDelayed: time to first byte of a new proxied connection
// through a relay that delays every chunk by 20 ms each way between
// client and server, in tunnel round trips (p50-rtt, max-rtt: one round
// trip is 40 ms). An app on loopback fetches a small response: through
// the redirect frontend (the app's bytes go at once), the server-side
// socks5 frontend (greeting and request each cross the tunnel before the
// data), and the client-side socks5 proxy (the client answers; the target
// rides in the SYN). The SOCKS app waits for each answer, as real clients
// do. With the default defence policies and with `defense: off`.
//
//	go test -run='^$' -bench=TTFBDelayed -benchtime=20x ./runner/
func BenchmarkTTFBDelayed(b *testing.B) {
	const delay = 20 * time.Millisecond
	o := startOrigin(b)
	host, port := o.hostPort()
	socks := &FrontendConfig{Type: "socks5", Allow: loopbackOnly}
	for _, defense := range []string{"default", "off"} {
		start := func(fc *FrontendConfig, listen string) string {
			opts := tunnelOpts{targetPort: int(port), frontend: fc, listen: listen, relay: true, delay: delay}
			if defense == "off" {
				opts.defense = "off"
			}
			tn := startTunnel(b, opts)
			tn.waitSession()
			return tn.cli.Addr().String()
		}
		for _, p := range []ttfbPath{
			{"redirect", plainGet(start(nil, ""))},
			{"server-socks5", socksGet(start(socks, ""), host, port)},
			{"client-socks5", socksGet(start(socks, "socks5"), host, port)},
		} {
			b.Run("defense="+defense+"/"+p.name, func(b *testing.B) { benchTTFB(b, p, 2*delay) })
		}
	}
}

// benchTTFB times b.N fetches of p and reports the median and the worst
// in milliseconds and in round trips of rtt.
func benchTTFB(b *testing.B, p ttfbPath, rtt time.Duration) {
	d, _ := ttfbSamples(b, p)
	p50 := d[len(d)/2]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p50)/float64(rtt), "p50-rtt")
	b.ReportMetric(float64(d[len(d)-1])/float64(rtt), "max-rtt")
}

// ttfbSamples times b.N fetches of p: the times sorted, and their sum.
func ttfbSamples(b *testing.B, p ttfbPath) ([]time.Duration, time.Duration) {
	d := make([]time.Duration, 0, b.N)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x, err := p.ttfb()
		if err != nil {
			b.Fatal(err)
		}
		d = append(d, x)
		total += x
	}
	b.StopTimer()
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d, total
}
