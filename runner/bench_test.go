package runner

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// Throughput of the whole pipeline on loopback, against direct TCP in the
// same run. `go test -run='^$' -bench=Bulk ./runner/`. Figures go in notes;
// nothing here asserts a speed.

const benchChunk = 256 << 10

// bulkDown reads b.N chunks that the target's source mode sends.
func bulkDown(b *testing.B, dial func() net.Conn) {
	c := dial()
	defer c.Close()
	var hdr [9]byte
	hdr[0] = modeSource
	binary.BigEndian.PutUint64(hdr[1:], uint64(b.N)*benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	if _, err := c.Write(hdr[:]); err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != int64(b.N)*benchChunk {
		b.Fatalf("got %d bytes, err %v", n, err)
	}
}

// bulkUp writes b.N chunks to the target's silent mode.
func bulkUp(b *testing.B, dial func() net.Conn) {
	c := dial()
	defer c.Close()
	buf := make([]byte, benchChunk)
	if _, err := c.Write([]byte{modeSilent}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, c)
}

func benchDialers(b *testing.B, protocol string) (direct, tunnel func() net.Conn) {
	return benchDialersWith(b, tunnelOpts{protocol: protocol})
}

func benchDialersWith(b *testing.B, o tunnelOpts) (direct, tunnel func() net.Conn) {
	tg := startTarget(b)
	o.targetPort = tg.port()
	tn := startTunnel(b, o)
	tn.waitSession()
	dial := func(addr string) func() net.Conn {
		return func() net.Conn {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
	}
	return dial(tg.ln.Addr().String()), dial(tn.cli.Addr().String())
}

func BenchmarkBulk(b *testing.B) {
	for _, proto := range []string{"v2", "v1"} {
		for _, dir := range []string{"down", "up"} {
			run := bulkDown
			if dir == "up" {
				run = bulkUp
			}
			b.Run(proto+"/"+dir+"/tunnel", func(b *testing.B) {
				_, tunnel := benchDialers(b, proto)
				run(b, tunnel)
			})
		}
	}
	b.Run("direct/down", func(b *testing.B) {
		direct, _ := benchDialers(b, "")
		bulkDown(b, direct)
	})
}

// BenchmarkBulkResume is the cost of resumable sessions (ACK frames and
// the resend buffer, SPEC-v2.md §7b): v2 bulk with resume_timeout off and
// on, and over four lanes (multi_tcp, §7d), in one run, with defense off (the default policies pace the first
// megabytes of every episode, which would hide the difference).
func BenchmarkBulkResume(b *testing.B) {
	for _, mode := range []struct {
		name, backend string
		resume        time.Duration
	}{{"off", "", -time.Second}, {"on", "", time.Minute}, {"lanes4", "multi_tcp", time.Minute}} {
		for _, dir := range []string{"down", "up"} {
			run := bulkDown
			if dir == "up" {
				run = bulkUp
			}
			b.Run(mode.name+"/"+dir, func(b *testing.B) {
				_, tunnel := benchDialersWith(b, tunnelOpts{resume: mode.resume, defense: "off", backend: mode.backend})
				run(b, tunnel)
			})
		}
	}
}

// BenchmarkRoundTrip is one 64-byte request and its echo, one at a time:
// v2 with the default policy (which paces, milliseconds a round trip) and
// with `defense: off` (v2-off, the latency of the pipeline itself), the
// latter also with resumable sessions (v2-off-resume: the resend stage and
// ACK frames, as the CLI runs by default).
// `go test -run='^$' -bench=RoundTrip/v2-off -cpu=1 ./runner/` under
// taskset resembles one pinned process; time(1)'s CPU seconds for a fixed
// -benchtime=20000x are steadier than ns/op on a loaded machine.
func BenchmarkRoundTrip(b *testing.B) {
	for _, name := range []string{"direct", "v2", "v2-off", "v2-off-resume"} {
		b.Run(name, func(b *testing.B) {
			o := tunnelOpts{}
			if name != "v2" {
				o.defense = "off"
			}
			if name == "v2-off-resume" {
				o.resume = time.Minute
			}
			direct, tunnel := benchDialersWith(b, o)
			dial := tunnel
			if name == "direct" {
				dial = direct
			}
			c := dial()
			defer c.Close()
			if _, err := c.Write([]byte{modeEcho}); err != nil {
				b.Fatal(err)
			}
			msg := make([]byte, 64)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNewStream is one short stream per op: connect, 1-byte echo,
// close; v2 with the default policy (which paces, milliseconds a stream)
// and with `defense: off` (v2-off, the cost of a stream itself: with
// -benchmem, allocations of client, server and target together).
func BenchmarkNewStream(b *testing.B) {
	for _, name := range []string{"v2", "v2-off"} {
		b.Run(name, func(b *testing.B) {
			// session_dial_rate lifted as in the bench (cmd/usocks
			// bench): the default, 1,000 dials a second per session,
			// would be what this measures.
			o := tunnelOpts{limits: Limits{SessionDialRate: 1 << 20}}
			if name == "v2-off" {
				o.defense = "off"
			}
			_, tunnel := benchDialersWith(b, o)
			one := []byte{modeEcho, 'x'}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := tunnel()
				if _, err := c.Write(one); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one[1:]); err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
}
