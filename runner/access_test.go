package runner

import (
	"fmt"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// TestUserLogField: on a multi-user server, "session established" and the
// access log line of each stream carry user=<name> from clients:, and the
// single-user lines carry no user at all.
func TestUserLogField(t *testing.T) {
	tg := startTarget(t)
	identity, alice, bob := newKey(t), newKey(t), newKey(t)
	srv, _, hook, port := startFileServer(t, fmt.Sprintf("server:\n  key: %s\n  backend: {address: 127.0.0.1, port: %%d}\n"+
		"  frontend: {server: 127.0.0.1, port: %d}\n  clients:\n    alice: %s\n    bob: %s\n", identity, tg.port(), alice, bob))
	for _, name := range []string{"alice", "bob"} {
		key := map[string]string{"alice": alice, "bob": bob}[name]
		cli, ok := runClient(t, &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: port}}, ServerKey: identity}, 10*time.Second)
		if !ok {
			t.Fatalf("%s got no session", name)
		}
		for range 2 {
			h := newHashedEcho(t, &tunnel{t: t, cli: cli, srv: srv})
			h.round(t, 10_000)
			h.finish(t)
		}
	}
	waitFor(t, "four access log lines", 10*time.Second, func() bool { return len(entries(hook.AllEntries(), "stream ended", "side", "server")) == 4 })
	for _, tc := range []struct {
		msg  string
		want map[string]int
	}{
		{"session established", map[string]int{"alice": 1, "bob": 1}},
		{"stream ended", map[string]int{"alice": 2, "bob": 2}},
	} {
		got := map[string]int{}
		for _, e := range entries(hook.AllEntries(), tc.msg, "side", "server") {
			u, _ := e.Data["user"].(string)
			got[u]++
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q lines by user: %v, want %v", tc.msg, got, tc.want)
		}
	}

	// A single-user server names no user.
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port()})
	tn.waitSession()
	h := newHashedEcho(t, tn)
	h.round(t, 10_000)
	h.finish(t)
	waitFor(t, "the access log line", 10*time.Second, func() bool { return len(entries(tn.hook.AllEntries(), "stream ended", "side", "server")) == 1 })
	for _, msg := range []string{"session established", "stream ended"} {
		for _, e := range entries(tn.hook.AllEntries(), msg, "side", "server") {
			if u, ok := e.Data["user"]; ok {
				t.Errorf("single-user %q line has user=%v", msg, u)
			}
		}
	}
}

// entries are the log entries with message msg and field k = v.
func entries(all []*logrus.Entry, msg, k, v string) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range all {
		if e.Message == msg && e.Data[k] == v {
			out = append(out, e)
		}
	}
	return out
}
