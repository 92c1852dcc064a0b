package runner

import (
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"
)

func TestServerPickerWeightsAndBackoff(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1000, 0)
	p := newServerPicker([]BackendServer{{Server: "a", Port: 1, Weight: 3}, {Server: "b", Port: 2, Weight: 1}, {Server: "c", Port: 3, Weight: 1}})
	p.rand, p.now = r.Float64, func() time.Time { return now }
	first := make([]int, 3)
	const n = 10000
	for i := 0; i < n; i++ {
		o := p.order()
		if len(o) != 3 {
			t.Fatalf("order %v: want every server once", o)
		}
		first[o[0]]++
	}
	// Expected shares 3/5, 1/5, 1/5.
	for i, want := range []float64{0.6, 0.2, 0.2} {
		if got := float64(first[i]) / n; got < want-0.03 || got > want+0.03 {
			t.Fatalf("server %d first in %.3f of picks, want %.2f (%v)", i, got, want, first)
		}
	}
	p.failed(0)
	p.failed(0) // second failure: 1 to 2 s
	p.failed(1) // 0.5 to 1 s
	for i := 0; i < 100; i++ {
		if o := p.order(); o[0] != 2 || o[1] != 1 || o[2] != 0 {
			t.Fatalf("order %v: want the healthy server, then the one back soonest", o)
		}
	}
	now = now.Add(1100 * time.Millisecond) // b is back, a is not
	if o := p.order(); o[2] != 0 {
		t.Fatalf("order %v: a is still backing off", o)
	}
	p.ok(0)
	seen := false
	for i := 0; i < 100 && !seen; i++ {
		seen = p.order()[0] == 0
	}
	if !seen {
		t.Fatal("a server that succeeded is not picked again")
	}
}

func TestBackendServersConfig(t *testing.T) {
	key := "0123456789abcdefghij"
	cases := []struct {
		b    BackendConfig
		want string // substring of the error, "" for none
	}{
		{BackendConfig{Servers: []BackendServer{{Server: "a"}, {Server: "b", Port: 5, Weight: 3}}}, ""},
		{BackendConfig{Server: "x", Servers: []BackendServer{{Server: "a"}}}, "client.backend.servers"},
		{BackendConfig{Port: 9, Servers: []BackendServer{{Server: "a"}}}, "client.backend.servers"},
		{BackendConfig{Servers: []BackendServer{{Port: 5}}}, "client.backend.servers[0].server"},
		{BackendConfig{Servers: []BackendServer{{Server: "a", Weight: -1}}}, "client.backend.servers[0].weight"},
		{BackendConfig{Servers: []BackendServer{{Server: "a", Port: 70000}}}, "client.backend.servers[0].port"},
	}
	for i, c := range cases {
		cfg := &ClientConfig{Common: Common{Key: key, Backend: c.b}}
		err := cfg.Validate()
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("case %d: %v, want %q", i, err, c.want)
		}
		if c.want == "" {
			got := cfg.backendServers()
			if len(got) != 2 || got[0].Port != DefaultBackendPort || got[0].Weight != 1 || got[1].Addr() != "b:5" {
				t.Errorf("case %d: servers %+v", i, got)
			}
		}
	}
	multi := &ClientConfig{Common: Common{Key: key, Backend: cases[0].b}}
	if err := multi.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := Link(multi, ""); err == nil {
		t.Error("a link of a config with several servers names only one")
	}
	scfg := &ServerConfig{Common: Common{Key: key, Backend: BackendConfig{Servers: []BackendServer{{Server: "a"}}}}}
	var ce *ConfigError
	if err := scfg.Validate(); !errors.As(err, &ce) || !strings.Contains(err.Error(), "server.backend.servers") {
		t.Errorf("servers in a server section: %v", err)
	}
}

// TestClientFailsOver: a client with two servers keeps working when the
// one holding its session is stopped (new streams within seconds), and
// skips a server that refuses connections.
func TestClientFailsOver(t *testing.T) {
	tg := startTarget(t)
	key := newKey(t)
	a, _, stopA := startReplica(t, &ServerConfig{Common: Common{Key: key}}, tg.port())
	b, _, stopB := startReplica(t, &ServerConfig{Common: Common{Key: key}}, tg.port())
	dead := listenLocal(t)
	deadPort := dead.Addr().(*net.TCPAddr).Port
	_ = dead.Close() // connections to it are refused
	cli, ok := runClient(t, &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Servers: []BackendServer{
		{Server: "127.0.0.1", Port: deadPort, Weight: 1000},
		{Server: "127.0.0.1", Port: port(a)},
		{Server: "127.0.0.1", Port: port(b)},
	}}}}, 10*time.Second)
	if !ok {
		t.Fatal("no session")
	}
	echoOK(t, cli, 100_000, 1)
	first, second, stopFirst := a, b, stopA
	if b.Sessions.Load() == 1 {
		first, second, stopFirst = b, a, stopB
	}
	if first.Sessions.Load() != 1 || second.Sessions.Load() != 0 {
		t.Fatalf("sessions %d and %d, want one", a.Sessions.Load(), b.Sessions.Load())
	}
	stopFirst()
	start := time.Now()
	waitFor(t, "a session at the other server", 5*time.Second, func() bool { return second.Sessions.Load() == 1 })
	echoOK(t, cli, 100_000, 2)
	t.Logf("new streams %v after the server stopped", time.Since(start).Round(time.Millisecond))
}

// TestClientFailsOverAbruptly: the path to the server holding the session
// dies without a word (connections cut, connects refused, as when its
// machine dies); new streams work within seconds through the other.
func TestClientFailsOverAbruptly(t *testing.T) {
	tg := startTarget(t)
	key := newKey(t)
	a, _, _ := startReplica(t, &ServerConfig{Common: Common{Key: key}}, tg.port())
	b, _, _ := startReplica(t, &ServerConfig{Common: Common{Key: key}}, tg.port())
	ra, rb := startRelay(t, a.Addr().String()), startRelay(t, b.Addr().String())
	defer ra.close()
	defer rb.close()
	cli, ok := runClient(t, &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Servers: []BackendServer{
		{Server: "127.0.0.1", Port: ra.port()}, {Server: "127.0.0.1", Port: rb.port()},
	}}}}, 10*time.Second)
	if !ok {
		t.Fatal("no session")
	}
	echoOK(t, cli, 100_000, 1)
	dead, other := ra, b
	if b.Sessions.Load() == 1 {
		dead, other = rb, a
	}
	dead.close()
	start := time.Now()
	waitFor(t, "a session at the other server", 5*time.Second, func() bool { return other.Sessions.Load() == 1 })
	echoOK(t, cli, 100_000, 2)
	t.Logf("new streams %v after the server's path died", time.Since(start).Round(time.Millisecond))
}
