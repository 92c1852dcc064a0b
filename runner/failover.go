package runner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client failover (docs/scale-out.md): a client may list several servers
// in place of backend.server and backend.port. Each new session picks one
// at random by weight among those not backing off; a server whose connect
// fails is skipped for the next in the same attempt, and a server whose
// connect, handshake or session failed backs off on its own.

// BackendServer is one entry of the client's backend.servers.
type BackendServer struct {
	Server string `yaml:"server"`
	Port   int    `yaml:"port"`
	// Weight spreads new sessions: a server with weight 2 gets twice the
	// sessions of one with weight 1 (default 1, 1..1000).
	Weight int `yaml:"weight"`
}

// Addr is host:port.
func (b BackendServer) Addr() string { return net.JoinHostPort(b.Server, strconv.Itoa(b.Port)) }

// Per-server backoff after a failure: doubling from min to max, half of
// it jittered; a handshake that succeeds resets it.
const (
	serverBackoffMin = time.Second
	serverBackoffMax = time.Minute
)

func (c *ClientConfig) validateServers(p *problems) {
	b := &c.Backend
	if len(b.Servers) == 0 {
		return
	}
	if b.Server != "" || b.Port != 0 {
		p.bad("backend.servers", "in place of backend.server and backend.port, not with them")
	}
	for i := range b.Servers {
		s := &b.Servers[i]
		key := fmt.Sprintf("backend.servers[%d]", i)
		if s.Server == "" {
			p.bad(key+".server", "missing")
		}
		if s.Port == 0 {
			s.Port = DefaultBackendPort
		}
		checkPort(p, key+".port", s.Port)
		if s.Weight == 0 {
			s.Weight = 1
		}
		if s.Weight < 1 || s.Weight > 1000 {
			p.bad(key+".weight", "must be 1..1000")
		}
	}
}

// backendServers is the client's list of servers: backend.servers, or
// the one backend.server and backend.port.
func (c *ClientConfig) backendServers() []BackendServer {
	if len(c.Backend.Servers) > 0 {
		return c.Backend.Servers
	}
	return []BackendServer{{Server: c.Backend.Server, Port: c.Backend.Port, Weight: 1}}
}

// serverPicker chooses the server for each new session.
type serverPicker struct {
	mu      sync.Mutex
	servers []BackendServer
	fails   []int
	until   []time.Time // backing off until then
	rand    func() float64
	now     func() time.Time
}

func newServerPicker(servers []BackendServer) *serverPicker {
	return &serverPicker{servers: servers, fails: make([]int, len(servers)), until: make([]time.Time, len(servers)),
		rand: rand.Float64, now: time.Now}
}

// order returns the servers to try, best first: those not backing off in
// a random order weighted by weight (each is first with probability
// weight / total), then those backing off, soonest back first.
func (p *serverPicker) order() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	type cand struct {
		i   int
		key float64
	}
	var ready, waiting []cand
	for i, s := range p.servers {
		if now.Before(p.until[i]) {
			waiting = append(waiting, cand{i, float64(p.until[i].UnixNano())})
			continue
		}
		// Efraimidis–Spirakis: sorting by u^(1/w) descending is a
		// weighted random permutation.
		u := max(p.rand(), math.SmallestNonzeroFloat64)
		ready = append(ready, cand{i, -math.Pow(u, 1/float64(s.Weight))})
	}
	sort.Slice(ready, func(a, b int) bool { return ready[a].key < ready[b].key })
	sort.Slice(waiting, func(a, b int) bool { return waiting[a].key < waiting[b].key })
	out := make([]int, 0, len(p.servers))
	for _, c := range append(ready, waiting...) {
		out = append(out, c.i)
	}
	return out
}

// String lists the servers (for the log).
func (p *serverPicker) String() string {
	addrs := make([]string, len(p.servers))
	for i, s := range p.servers {
		addrs[i] = s.Addr()
	}
	return strings.Join(addrs, ",")
}

// failed records a failure of server i: it backs off.
func (p *serverPicker) failed(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := serverBackoffMin
	for k := 0; k < p.fails[i] && d < serverBackoffMax; k++ {
		d *= 2
	}
	d = min(d, serverBackoffMax)
	p.fails[i]++
	p.until[i] = p.now().Add(d/2 + time.Duration(p.rand()*float64(d/2)))
}

// ok records a handshake that succeeded with server i.
func (p *serverPicker) ok(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fails[i], p.until[i] = 0, time.Time{}
}

// dialAny connects to the first server in the picker's order that
// answers, and returns its index.
func (c *Client) dialAny(ctx context.Context) (net.Conn, int, error) {
	var errs []error
	for _, i := range c.servers.order() {
		s := c.servers.servers[i]
		conn, err := c.dialBackend(ctx, s)
		if err == nil {
			return conn, i, nil
		}
		c.servers.failed(i)
		if ctx.Err() != nil {
			return nil, 0, err
		}
		if len(c.servers.servers) > 1 {
			c.log.WithField("server", s.Addr()).WithError(err).Warn("server unreachable, trying the next")
		}
		errs = append(errs, err)
	}
	return nil, 0, errors.Join(errs...)
}
