package stages

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"usocks/wire"
)

// SYN targets (SPEC-v2.md §6e) at the server's demux.

// targetFrontend takes client-chosen targets: it records them and what
// the stream carries to the target.
type targetFrontend struct {
	testFrontend
	mu      sync.Mutex
	targets []string
	got     bytes.Buffer
	done    chan struct{}
}

func (fe *targetFrontend) OpenTarget(ctx context.Context, s StreamIO, t wire.Target) (net.Conn, error) {
	fe.mu.Lock()
	fe.targets = append(fe.targets, string(t.Addr))
	fe.mu.Unlock()
	c, target := net.Pipe()
	fe.wg.Add(1)
	go func() {
		defer fe.wg.Done()
		// net.Pipe has no half-close: read what the test sends.
		b := make([]byte, len("hello"))
		n, _ := io.ReadFull(target, b)
		b = b[:n]
		fe.mu.Lock()
		fe.got.Write(b)
		fe.mu.Unlock()
		_ = target.Close()
		close(fe.done)
	}()
	return c, nil
}

func synTarget(t *testing.T, id uint16, name string) wire.Frame {
	p, err := wire.AppendTarget(nil, wire.Target{Type: wire.TargetName, Addr: []byte(name), Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	return wire.Frame{Type: wire.FrameStream, Flags: wire.FlagSYN, Stream: id, Payload: p}
}

func TestDemuxSynTarget(t *testing.T) {
	fe := &targetFrontend{testFrontend: testFrontend{mode: "block"}, done: make(chan struct{})}
	r := newDemuxRig(t, Server, &fe.testFrontend, nil)
	r.d.Frontend = fe
	r.send(synTarget(t, 1, "example.com"))
	r.send(stf(wire.FlagDAT|wire.FlagFIN, 1, "hello"))
	select {
	case <-fe.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the target did not get the data")
	}
	if got := r.answers(); len(got) != 0 {
		t.Errorf("answers %s, want none", frameList(got))
	}
	_ = r.stop()
	fe.mu.Lock()
	defer fe.mu.Unlock()
	if len(fe.targets) != 1 || fe.targets[0] != "example.com" || fe.got.String() != "hello" {
		t.Errorf("targets %q, data %q; want [example.com] and only the DAT payload", fe.targets, fe.got.String())
	}
	if n := fe.opens.Load(); n != 0 {
		t.Errorf("Open called %d times for a SYN with a target", n)
	}
}

func TestDemuxSynTargetRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target bool // the frontend takes targets
		syn    func(t *testing.T) wire.Frame
	}{
		{"frontend without targets", false, func(t *testing.T) wire.Frame { return synTarget(t, 3, "example.com") }},
		{"malformed target", true, func(*testing.T) wire.Frame { return stf(wire.FlagSYN, 3, "\x03\x00\x01\xbb") }},
		{"trailing byte", true, func(t *testing.T) wire.Frame {
			f := synTarget(t, 3, "a")
			f.Payload = append(f.Payload, 0)
			return f
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := &targetFrontend{testFrontend: testFrontend{mode: "block"}, done: make(chan struct{})}
			r := newDemuxRig(t, Server, &fe.testFrontend, nil)
			if tc.target {
				r.d.Frontend = fe
			}
			r.send(tc.syn(t))
			r.send(stf(wire.FlagDAT, 3, "data")) // the id is not held: RST again
			got := r.answers()
			_ = r.stop()
			if want := []wire.Frame{rstOf(3), rstOf(3)}; !sameFrames(got, want) {
				t.Errorf("answers %s, want %s", frameList(got), frameList(want))
			}
			if fe.opens.Load() != 0 || len(fe.targets) != 0 || r.d.Stats.StreamsOpened.Load() != 0 {
				t.Errorf("a refused SYN target opened a stream")
			}
		})
	}
}
