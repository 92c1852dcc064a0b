package runner

import (
	"context"
	"strings"
	"testing"
	"time"

	"usocks/stages"
	"usocks/wire"
)

// TestDefencePolicies runs each policy end to end through a counting relay:
// a page-sized echo (byte-exact, SHA-256 checked by echoThrough), then the
// episode ends and the dummies that fill its bucket are verified and
// discarded by the peer. With cells, everything the client wrote after its
// first flight is a whole number of the policy's client cells.
func TestDefencePolicies(t *testing.T) {
	for _, policy := range []string{"off", "light", "standard", "max"} {
		t.Run(policy, func(t *testing.T) {
			tg := startTarget(t)
			tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), relay: true, defense: policy})
			defer tn.stop()
			tn.waitSession()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := echoThrough(ctx, tn, 100<<10, 5); err != nil {
				t.Fatal(err)
			}
			cli, srv := &tn.cli.Stats, &tn.srv.Stats
			if policy == "off" {
				// Off runs no defence stage at all (nothing could send a
				// dummy later): both sides agreed on off, and no dummy
				// went either way during the echo.
				if cp, sp := wire.DefencePolicy(cli.DefencePolicy.Load()), wire.DefencePolicy(srv.DefencePolicy.Load()); cp != wire.DefenceOff || sp != wire.DefenceOff {
					t.Fatalf("policy off: client runs %v, server %v", cp, sp)
				}
				if n := cli.DefenceDummy.Load() + srv.DefenceDummy.Load() + cli.ChaffReceived.Load() + srv.ChaffReceived.Load(); n != 0 {
					t.Fatalf("policy off sent dummies: %d", n)
				}
				return
			}
			// The episode closes after its idle time; then both tails go out.
			waitFor(t, "both sides' dummies to arrive", 20*time.Second, func() bool {
				return srv.DefenceDummy.Load() > 0 && cli.DefenceDummy.Load() > 0 &&
					cli.ChaffReceived.Load() > 0 && srv.ChaffReceived.Load() > 0
			})
			quiescent(t, &tn.relay.c2s)
			flight, total := sessionWrites(t, tn)
			p, _ := wire.ParseDefencePolicy(policy)
			cell := int64(stages.DefencePolicy(p, stages.Client).Cell)
			if (total-flight)%cell != 0 {
				t.Errorf("client wrote %d bytes after its %d-byte flight: not whole %d-byte cells", total-flight, flight, cell)
			}
			if tn.srv.Failed.Load() != 0 || tn.srv.Sessions.Load() != 1 {
				t.Fatal("the defence disturbed the session")
			}
			t.Logf("%s: client data %d dummy %d B; server data %d dummy %d B", policy,
				cli.DefenceData.Load(), cli.DefenceDummy.Load(), srv.DefenceData.Load(), srv.DefenceDummy.Load())
		})
	}
}

// TestDefenceNegotiation: the server grants at most its cap, and what it
// grants is what both sides run.
func TestDefenceNegotiation(t *testing.T) {
	cases := []struct {
		client, server string
		want           wire.DefencePolicy
	}{
		{"max", "light", wire.DefenceLight},
		{"light", "max", wire.DefenceLight},
		{"standard", "off", wire.DefenceOff},
		{"off", "max", wire.DefenceOff},
	}
	for _, c := range cases {
		t.Run(c.client+"/"+c.server, func(t *testing.T) {
			tg := startTarget(t)
			tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), defense: c.server, cliDefense: c.client})
			defer tn.stop()
			tn.waitSession()
			waitFor(t, "both sides to agree", 10*time.Second, func() bool {
				return wire.DefencePolicy(tn.cli.Stats.DefencePolicy.Load()) == c.want && wire.DefencePolicy(tn.srv.Stats.DefencePolicy.Load()) == c.want
			})
		})
	}
}

// TestRetiredDefenceKeys: a config that still sets the old padding/chaff
// keys is refused with a message that says what replaced them.
func TestRetiredDefenceKeys(t *testing.T) {
	for _, k := range []string{"padding: high", "chaff: false", "idle_chaff: 1s", "chaff_window: 2s"} {
		_, err := ParseConfig([]byte("client:\n  " + k + "\n"))
		if err == nil || !strings.Contains(err.Error(), "defense: off | light | standard | max") {
			t.Errorf("%s: got %v", k, err)
		}
	}
}

// quiescent waits until a counter stops moving and returns its value.
func quiescent(t *testing.T, c interface{ Load() int64 }) int64 {
	t.Helper()
	last := int64(-1)
	for i := 0; i < 400; i++ {
		v := c.Load()
		if v == last {
			return v
		}
		last = v
		time.Sleep(150 * time.Millisecond)
	}
	t.Fatal("traffic never stopped")
	return 0
}

// sessionWrites opens the prefix of the client's first flight on the
// session's backend (the relay's last connection: a client may retry) and
// returns the flight's length and all the client sent on it.
func sessionWrites(t *testing.T, tn *tunnel) (flight, total int64) {
	t.Helper()
	psk, err := wire.ParseKey(tn.key)
	if err != nil {
		t.Fatal(err)
	}
	tn.relay.mu.Lock()
	rec := tn.relay.recorded[len(tn.relay.recorded)-1]
	tn.relay.mu.Unlock()
	if len(rec) >= 1<<20 {
		t.Fatal("the relay recorded only the first MiB")
	}
	r := wire.NewClientHelloReader(&psk)
	rest, err := r.OpenPrefix(rec[:wire.ClientPrefixLen])
	if err != nil {
		t.Fatal(err)
	}
	return int64(wire.ClientPrefixLen + rest), int64(len(rec))
}
