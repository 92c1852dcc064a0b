package runner

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"usocks/internal/faultproxy"
)

// Backend faults through internal/faultproxy, for behaviour that holds
// whatever the session layer does on a lost backend.

// viaFaults puts a fault proxy with script between the client and the
// server; the proxy is set once the tunnel starts.
func viaFaults(t *testing.T, script faultproxy.Script, p **faultproxy.Proxy) func(string) string {
	return func(serverAddr string) string {
		fp, err := faultproxy.New(faultproxy.Options{Target: serverAddr, Script: script})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fp.Close() })
		*p = fp
		return fp.Addr()
	}
}

// TestFragmentedBackend: every byte of the handshake and of the records
// crosses the backend in a write (a TCP segment) of its own, both ways, on
// every v2 backend kind; the echo is byte-exact.
func TestFragmentedBackend(t *testing.T) {
	overBackends(t, func(t *testing.T, o tunnelOpts) {
		var fp *faultproxy.Proxy
		o.defense = "off" // no dummies: every byte crossing the proxy is ours
		conns := 1
		if o.backend == "multi_tcp" {
			conns = 4 // every lane, and the bytes summed over them
		}
		script := faultproxy.Script{}
		for i := range conns {
			script[i] = []faultproxy.Fault{
				{Dir: faultproxy.Up, Action: faultproxy.Fragment},
				{Dir: faultproxy.Down, Action: faultproxy.Fragment},
			}
		}
		o.via = viaFaults(t, script, &fp)
		tn, _ := startWithTarget(t, o)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := echoThrough(ctx, tn, 20<<10, 3); err != nil {
			t.Fatal(err)
		}
		for _, d := range []faultproxy.Dir{faultproxy.Up, faultproxy.Down} {
			var b, w int64
			for i := range conns {
				c, err := fp.Conn(ctx, i)
				if err != nil {
					t.Fatal(err)
				}
				b, w = b+c.Bytes(d), w+c.Writes(d)
			}
			if b < 20<<10 || w != b {
				t.Errorf("%v: %d bytes in %d writes; want all of at least 20 KiB one byte per write", d, b, w)
			}
		}
		if s := tn.srv.Sessions.Load(); s != 1 {
			t.Errorf("%d sessions, want 1", s)
		}
	})
}

// TestStalledBackendDetected: a backend that stops carrying anything (both
// directions stalled, the connection open) is found dead by the client's
// keepalive within about two intervals, and the client opens a new backend
// connection. An app connection opened during the stall does not hang: it
// is reset (a new session) or carried over (a resumed one); the next
// stream echoes byte-exact.
func TestStalledBackendDetected(t *testing.T) {
	const keepalive = 200 * time.Millisecond
	var fp *faultproxy.Proxy
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), keepalive: keepalive, via: viaFaults(t, nil, &fp)})
	tn.waitSession()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := echoThrough(ctx, tn, 10<<10, 1); err != nil {
		t.Fatal(err)
	}
	lane, err := fp.Conn(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	lane.Stall(faultproxy.Up)
	lane.Stall(faultproxy.Down)
	defer lane.Release()
	stalled := time.Now()

	// An app connection during the stall: its SYN goes into the dead
	// backend.
	app, err := net.DialTimeout("tcp", tn.cli.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	_ = app.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = app.Write([]byte{modeEcho, 'x'})
	_ = app.(*net.TCPConn).CloseWrite()

	if _, err := fp.Conn(ctx, 1); err != nil { // the client's next backend connection
		t.Fatalf("no new backend connection after the stall: %v", err)
	}
	t.Logf("dead backend replaced after %v (keepalive %v)", time.Since(stalled).Round(time.Millisecond), keepalive)

	got, err := io.ReadAll(app)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatal("the app connection hung through the stall")
	case err == nil && string(got) == "x": // carried over by a resumed session
	case err != nil && len(got) == 0: // reset with its session
	default:
		t.Errorf("app connection during the stall: read %q, %v; want its echo or a reset", got, err)
	}
	t.Logf("app connection during the stall ended after %v (%q, %v)", time.Since(stalled).Round(time.Millisecond), got, err)
	if err := echoThrough(ctx, tn, 10<<10, 2); err != nil {
		t.Fatalf("after the stall: %v", err)
	}
}
