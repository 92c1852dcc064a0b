package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"usocks/wire"
)

// Time to first byte of a new proxied connection, in tunnel round trips:
// a relay in the bench process holds every chunk TTFBDelay each way
// between a usocks client and server (one tunnel round trip is
// 2×TTFBDelay), and an app on loopback opens a connection, sends one
// byte to the target's ModeOnce and waits for its echo: through the
// redirect frontend (the app's byte goes at once), the server-side SOCKS5
// frontend (greeting and request each cross the tunnel first) and the
// client-side SOCKS5 proxy (the client answers, the target rides in the
// SYN). The SOCKS5 app waits for each answer, as real clients do. With
// `defense: off` and with the default policy.

// TTFBDelay is the relay's delay each way.
const TTFBDelay = 20 * time.Millisecond

// TTFBResult is one path under one policy.
type TTFBResult struct {
	Path    string  `json:"path"`
	Defense string  `json:"defense"`
	P50ms   float64 `json:"p50_ms"`
	P50RTT  float64 `json:"p50_rtt"`
	MaxRTT  float64 `json:"max_rtt"`
	Samples int     `json:"samples"`
	Error   string  `json:"error,omitempty"`
}

// ttfbPaths are the paths measured: name, server frontend, client listen.
var ttfbPaths = []struct{ name, frontend, listen string }{
	{"redirect", "redirect", ""},
	{"server-side socks5", "socks5", ""},
	{"client-side socks5", "socks5", "socks5"},
}

// ttfb runs the TTFB workload for every path under both policies, with a
// target of its own.
func (b *bencher) ttfb(ctx context.Context) []TTFBResult {
	tp, addr, err := b.startTarget(ctx)
	if err != nil {
		return []TTFBResult{{Path: "all", Error: err.Error()}}
	}
	defer tp.stop(3 * time.Second)
	target, err := netip.ParseAddrPort(addr)
	if err != nil {
		return []TTFBResult{{Path: "all", Error: err.Error()}}
	}
	var out []TTFBResult
	for _, defense := range []string{"off", "standard"} {
		for _, p := range ttfbPaths {
			if ctx.Err() != nil {
				return out
			}
			r := TTFBResult{Path: p.name, Defense: defense}
			d, err := b.ttfbPath(ctx, target, p.frontend, p.listen, defense)
			if err != nil {
				r.Error = err.Error()
			} else {
				rtt := float64(2 * TTFBDelay)
				r.Samples = len(d)
				r.P50ms = Millis(Percentile(d, 50))
				r.P50RTT = float64(Percentile(d, 50)) / rtt
				r.MaxRTT = float64(d[len(d)-1]) / rtt
			}
			b.logf("bench: time to first byte, %s, defense %s: %s", p.name, defense, r.String())
			out = append(out, r)
		}
	}
	return out
}

func (r TTFBResult) String() string {
	if r.Error != "" {
		return "error: " + r.Error
	}
	return fmt.Sprintf("%.1f ms, %.2f round trips (max %.2f)", r.P50ms, r.P50RTT, r.MaxRTT)
}

// ttfbPath starts a server, a delaying relay and a client for one path
// and times Scale.TTFBSamples connections; the times come back sorted.
func (b *bencher) ttfbPath(ctx context.Context, target netip.AddrPort, frontend, listen, defense string) ([]time.Duration, error) {
	psk, err := wire.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	sport, cport, err := twoPorts()
	if err != nil {
		return nil, err
	}
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	relay := &delayRelay{ln: rl, to: net.JoinHostPort("127.0.0.1", strconv.Itoa(sport)), delay: TTFBDelay}
	defer relay.close()
	relay.wg.Go(relay.serve)
	cfg := ttfbConfig(psk, defense, frontend, listen, sport, rl.Addr().(*net.TCPAddr).Port, cport, target)
	file := filepath.Join(b.dir, fmt.Sprintf("ttfb-%s-%s-%s.yaml", frontend, listen, defense))
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	s := &setup{}
	defer s.stop()
	logArgs := []string{"-c", file, "--log-level", "warn"}
	if err := b.startPair(ctx, s, "usocks ttfb", b.exe, append([]string{"server"}, logArgs...), sport,
		b.exe, append([]string{"client"}, logArgs...), cport); err != nil {
		return nil, err
	}
	once := func() (time.Duration, error) {
		return ttfbOnce(ctx, s.addr, frontend == "socks5", target)
	}
	// The first connection waits for the session; it is not counted.
	var first error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
		if _, first = once(); first == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if first != nil {
		return nil, first
	}
	var d []time.Duration
	for range b.opts.Scale.TTFBSamples {
		x, err := once()
		if err != nil {
			return nil, err
		}
		d = append(d, x)
	}
	slices.Sort(d)
	return d, nil
}

// ttfbConfig is the YAML of one TTFB tunnel: the client's backend is the
// relay; the server's SOCKS5 frontend allows loopback (the target).
func ttfbConfig(psk, defense, frontend, listen string, sport, rport, cport int, target netip.AddrPort) string {
	fe := "{type: socks5, allow: [127.0.0.0/8]}"
	if frontend == "redirect" {
		fe = fmt.Sprintf("{type: redirect, server: %s, port: %d}", target.Addr(), target.Port())
	}
	ln := ""
	if listen != "" {
		ln = fmt.Sprintf("\n  listen: {type: %s}", listen)
	}
	return fmt.Sprintf(`# usocks bench, time to first byte
client:
  backend: {type: plain_tcp, server: 127.0.0.1, port: %[4]d}
  key: %[1]q
  defense: %[2]s
  address: 127.0.0.1
  port: %[5]d%[6]s
server:
  backend: {type: plain_tcp, address: 127.0.0.1, port: %[3]d}
  frontend: %[7]s
  key: %[1]q
  probe_timeout: 10s
`, psk, defense, sport, rport, cport, ln, fe)
}

// ttfbOnce opens a connection to addr (through SOCKS5 to target if
// socks), sends ModeOnce and returns the time from the connect to the
// echo.
func ttfbOnce(ctx context.Context, addr string, socks bool, target netip.AddrPort) (time.Duration, error) {
	var hello func(net.Conn) error
	if socks {
		hello = func(c net.Conn) error { return socks5Connect(c, target) }
	}
	return openOnce(ctx, addr, hello, false)
}

// socks5Connect does a SOCKS5 greeting (no authentication) and a CONNECT
// to an IPv4 target on c, waiting for each answer.
func socks5Connect(c net.Conn, target netip.AddrPort) error {
	if !target.Addr().Is4() {
		return errors.New("socks5: the bench's target is IPv4")
	}
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	var ans [10]byte
	if _, err := io.ReadFull(c, ans[:2]); err != nil || ans[0] != 5 || ans[1] != 0 {
		return fmt.Errorf("socks5 greeting answered % x: %v", ans[:2], err)
	}
	a := target.Addr().As4()
	req := []byte{5, 1, 0, 1, a[0], a[1], a[2], a[3], byte(target.Port() >> 8), byte(target.Port())}
	if _, err := c.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, ans[:]); err != nil || ans[1] != 0 {
		return fmt.Errorf("socks5 connect answered % x: %v", ans[:], err)
	}
	return nil
}

// delayRelay forwards connections from ln to `to`, holding every chunk
// for delay in each direction (a link with that one-way latency and no
// bandwidth limit).
type delayRelay struct {
	ln     net.Listener
	to     string
	delay  time.Duration
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup // serve and every pipe
}

func (r *delayRelay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", r.to, opTimeout)
		if err != nil {
			_ = c.Close()
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			_, _ = c.Close(), up.Close()
			return
		}
		r.conns = append(r.conns, c, up)
		r.mu.Unlock()
		r.wg.Go(func() { r.pipe(c, up) })
		r.wg.Go(func() { r.pipe(up, c) })
	}
}

// pipe copies src to dst, each chunk delay after it was read.
func (r *delayRelay) pipe(src, dst net.Conn) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 4096)
	r.wg.Go(func() {
		for ch := range q {
			time.Sleep(time.Until(ch.due))
			if _, err := dst.Write(ch.b); err != nil {
				break
			}
		}
		for range q { // drain after a failed write
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	})
	defer close(q)
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{buf[:n], time.Now().Add(r.delay)}
		}
		if err != nil {
			return
		}
	}
}

func (r *delayRelay) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	r.closed = true
	for _, c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
