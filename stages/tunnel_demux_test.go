package stages

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"usocks/wire"
)

// Unit tests of the demux against the receiver rules of SPEC-v2.md §6d:
// frames go in, and what comes out (answers on the control queue, streams
// opened, the error that ends the session) is checked.

// testFrontend opens streams for the demux under test.
type testFrontend struct {
	mode  string // "block": Open waits for the session's end; "refuse": Open fails; "discard": a target that reads and discards; "stall": a target that never reads
	opens atomic.Int64
	wg    sync.WaitGroup // targets of "discard"
}

var errRefused = errors.New("refused by the test frontend")

func (fe *testFrontend) Open(ctx context.Context, s StreamIO) (net.Conn, error) {
	fe.opens.Add(1)
	switch fe.mode {
	case "refuse":
		return nil, errRefused
	case "discard":
		c, target := net.Pipe()
		fe.wg.Add(1)
		go func() {
			defer fe.wg.Done()
			_, _ = io.Copy(io.Discard, target)
			_ = target.Close()
		}()
		return c, nil
	case "stall":
		c, target := net.Pipe()
		fe.wg.Add(1)
		go func() {
			defer fe.wg.Done()
			<-ctx.Done()
			_ = target.Close()
		}()
		return c, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// testRelay is a client's datagram relay that records what it is told.
type testRelay struct {
	mu        sync.Mutex
	opened    []uint16
	delivered [][]byte
	closed    []uint16
}

// Open opens an association for a stream whose app sent "ASSOCIATE"
// (the test's stand-in for a SOCKS5 UDP ASSOCIATE).
func (r *testRelay) Open(id uint16, _ netip.Addr, sent []byte, _ func([]byte) bool) []byte {
	if string(sent) != "ASSOCIATE" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened = append(r.opened, id)
	return []byte("ready")
}

func (r *testRelay) Deliver(_ uint16, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delivered = append(r.delivered, append([]byte(nil), p...))
}

func (r *testRelay) Close(id uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = append(r.closed, id)
}

// demuxRig runs one Demux with channels the test reads and writes.
type demuxRig struct {
	t       *testing.T
	d       *Demux
	fe      *testFrontend
	in      chan Frame
	control chan Frame
	data    chan Frame
	cancel  context.CancelFunc
	done    chan error
	pings   uint64
	closes  atomic.Int64
}

func newDemuxRig(t *testing.T, role Role, fe *testFrontend, setup func(*Demux)) *demuxRig {
	r := &demuxRig{t: t, fe: fe, in: make(chan Frame), control: make(chan Frame, ControlQueueLen),
		data: make(chan Frame, DataQueueLen), done: make(chan error, 1)}
	r.d = &Demux{Role: role, In: r.in, Data: r.data, Control: r.control, Frontend: fe, Log: testLog(),
		Stats: new(Stats), PeerClosing: func() { r.closes.Add(1) }}
	if setup != nil {
		setup(r.d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.d.Run(ctx) }()
	return r
}

// send hands the demux one frame, as the decrypt stage does.
func (r *demuxRig) send(f wire.Frame) {
	r.t.Helper()
	f.Payload = append([]byte(nil), f.Payload...)
	select {
	case r.in <- Frame{Frame: f}:
	case err := <-r.done:
		r.done <- err
		r.t.Fatalf("demux ended before %v: %v", f, err)
	case <-time.After(10 * time.Second):
		r.t.Fatalf("demux does not take %v", f)
	}
}

// answers sends a PING and returns the control frames queued before its
// PONG: the demux handles frames in order, so these are its answers to
// everything sent so far.
func (r *demuxRig) answers() []wire.Frame {
	r.t.Helper()
	r.pings++
	mark := binary.BigEndian.AppendUint64(nil, r.pings)
	r.send(wire.Frame{Type: wire.FramePing, Payload: mark})
	var got []wire.Frame
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-r.control:
			if f.Type == wire.FramePong && bytes.Equal(f.Payload, mark) {
				return got
			}
			got = append(got, f.Frame)
			f.Release()
		case <-timeout:
			r.t.Fatalf("no PONG; answers so far %v", got)
		}
	}
}

// end closes the demux's input (the backend's EOF) and returns Run's error.
func (r *demuxRig) end() error {
	r.t.Helper()
	close(r.in)
	return r.wait()
}

// stop ends the session through ctx.
func (r *demuxRig) stop() error {
	r.t.Helper()
	r.cancel()
	return r.wait()
}

func (r *demuxRig) wait() error {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.cancel()
		r.fe.wg.Wait()
		for len(r.data) > 0 {
			f := <-r.data
			f.Release()
		}
		return err
	case <-time.After(10 * time.Second):
		r.t.Fatal("demux did not end")
		return nil
	}
}

func stf(flags wire.Flags, id uint16, payload string) wire.Frame {
	return wire.Frame{Type: wire.FrameStream, Flags: flags, Stream: id, Payload: []byte(payload)}
}

func rstOf(id uint16) wire.Frame { return stf(wire.FlagRST, id, "") }

func frameList(fs []wire.Frame) string {
	var b bytes.Buffer
	for _, f := range fs {
		fmt.Fprintf(&b, "[%v] ", f)
	}
	return b.String()
}

func sameFrames(got, want []wire.Frame) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Type != w.Type || g.Flags != w.Flags || g.Stream != w.Stream || !bytes.Equal(g.Payload, w.Payload) {
			return false
		}
	}
	return true
}

func TestDemuxReceiverRules(t *testing.T) {
	big := string(make([]byte, streamWindow))
	for _, tc := range []struct {
		name       string
		client     bool // the demux is a client's (default: a server's)
		fe         string
		maxStreams int
		frames     []wire.Frame
		want       []wire.Frame // answers on the control queue, in order
		opens      int64        // frontend Open calls
	}{
		{name: "SYN opens a stream", fe: "block",
			frames: []wire.Frame{stf(wire.FlagSYN, 1, "")}, opens: 1},
		{name: "SYN with data opens a stream", fe: "block",
			frames: []wire.Frame{stf(wire.FlagSYN|wire.FlagDAT, 1, "hello")}, opens: 1},
		{name: "duplicate SYN resets the stream and opens nothing", fe: "block",
			frames: []wire.Frame{stf(wire.FlagSYN, 1, ""), stf(wire.FlagSYN|wire.FlagDAT, 1, "again")},
			want:   []wire.Frame{rstOf(1)}, opens: 1},
		{name: "SYN over the stream limit is refused", fe: "block", maxStreams: 2,
			frames: []wire.Frame{stf(wire.FlagSYN, 1, ""), stf(wire.FlagSYN, 2, ""), stf(wire.FlagSYN, 3, "")},
			want:   []wire.Frame{rstOf(3)}, opens: 2},
		{name: "SYN at the client is answered with RST", client: true, fe: "block",
			frames: []wire.Frame{stf(wire.FlagSYN, 4, "")}, want: []wire.Frame{rstOf(4)}},
		{name: "a refused stream is reset", fe: "refuse",
			frames: []wire.Frame{stf(wire.FlagSYN, 1, "")}, want: []wire.Frame{rstOf(1)}, opens: 1},
		{name: "data for an unknown stream is answered with RST", fe: "block",
			frames: []wire.Frame{stf(wire.FlagDAT, 5, "x")}, want: []wire.Frame{rstOf(5)}},
		{name: "FIN for an unknown stream is answered with RST", fe: "block",
			frames: []wire.Frame{stf(wire.FlagFIN, 5, "")}, want: []wire.Frame{rstOf(5)}},
		{name: "no flags on an unknown stream is answered with RST", fe: "block",
			frames: []wire.Frame{stf(0, 5, "")}, want: []wire.Frame{rstOf(5)}},
		{name: "RST for an unknown stream is ignored", fe: "block",
			frames: []wire.Frame{rstOf(5)}},
		{name: "RST resets a stream without an answer", fe: "block",
			frames: []wire.Frame{stf(wire.FlagSYN, 1, ""), rstOf(1), stf(wire.FlagDAT, 1, "late")}, opens: 1},
		{name: "data within the window is buffered", fe: "block",
			frames: []wire.Frame{stf(wire.FlagSYN, 1, ""), stf(wire.FlagDAT, 1, big)}, opens: 1},
		{name: "data beyond the window resets the stream", fe: "block",
			frames: []wire.Frame{stf(wire.FlagSYN, 1, ""), stf(wire.FlagDAT, 1, big), stf(wire.FlagDAT, 1, "x")},
			want:   []wire.Frame{rstOf(1)}, opens: 1},
		{name: "data beyond the credit resets the stream, whatever the target took", fe: "stall",
			frames: append([]wire.Frame{stf(wire.FlagSYN, 1, "")}, repeatFrame(stf(wire.FlagDAT, 1, string(make([]byte, 16<<10))), streamWindow/(16<<10)+1)...),
			want:   []wire.Frame{rstOf(1)}, opens: 1},
		{name: "data after FIN resets the stream", fe: "block",
			frames: []wire.Frame{stf(wire.FlagSYN|wire.FlagDAT|wire.FlagFIN, 1, "req"), stf(wire.FlagDAT, 1, "more")},
			want:   []wire.Frame{rstOf(1)}, opens: 1},
		{name: "WINDOW for an unknown stream is ignored", fe: "block",
			frames: []wire.Frame{{Type: wire.FrameWindow, Stream: 5, Payload: wire.WindowPayload(nil, 1000)}}},
		{name: "DATAGRAM for an unknown stream is dropped", fe: "block",
			frames: []wire.Frame{{Type: wire.FrameDatagram, Stream: 5, Payload: []byte("dgram")}}},
		{name: "DATAGRAM for an unknown stream is dropped at the client", client: true, fe: "block",
			frames: []wire.Frame{{Type: wire.FrameDatagram, Stream: 5}}},
		{name: "PING is answered with its payload", fe: "block",
			frames: []wire.Frame{{Type: wire.FramePing, Payload: []byte("abc")}},
			want:   []wire.Frame{{Type: wire.FramePong, Payload: []byte("abc")}}},
		{name: "PONG and PAD are ignored", fe: "block",
			frames: []wire.Frame{{Type: wire.FramePong, Payload: []byte("x")}, {Type: wire.FramePad}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fe := &testFrontend{mode: tc.fe}
			role := Server
			if tc.client {
				role = Client
			}
			r := newDemuxRig(t, role, fe, func(d *Demux) { d.MaxStreams = tc.maxStreams })
			for _, f := range tc.frames {
				r.send(f)
			}
			got := r.answers()
			// Answers sent by stream actors (a refused open) may come
			// after the PONG: wait for as many as expected, then for
			// the end of every actor, and take any extra ones too.
			for wait := time.After(10 * time.Second); len(got) < len(tc.want); {
				select {
				case f := <-r.control:
					got = append(got, f.Frame)
				case <-wait:
					t.Fatalf("answers %s, want %s", frameList(got), frameList(tc.want))
				}
			}
			if err := r.stop(); !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v, want context.Canceled", err)
			}
			for len(r.control) > 0 {
				f := <-r.control
				got = append(got, f.Frame)
			}
			if !sameFrames(got, tc.want) {
				t.Errorf("answers %s, want %s", frameList(got), frameList(tc.want))
			}
			if n := fe.opens.Load(); n != tc.opens {
				t.Errorf("frontend opened %d streams, want %d", n, tc.opens)
			}
			if n := r.d.Stats.StreamsOpened.Load(); n != tc.opens {
				t.Errorf("StreamsOpened %d, want %d", n, tc.opens)
			}
		})
	}
}

// How the session ends, by what the peer sent last.
func TestDemuxSessionEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames []wire.Frame
		want   error
		closes int64
	}{
		{"EOF without CLOSE is an insecure close", nil, ErrInsecureClose, 0},
		{"EOF after CLOSE is a clean close", []wire.Frame{{Type: wire.FrameClose}}, ErrPeerClosed, 1},
		{"a second CLOSE is not acted on", []wire.Frame{{Type: wire.FrameClose}, {Type: wire.FrameClose}}, ErrPeerClosed, 1},
		{"RESET ends the session", []wire.Frame{{Type: wire.FrameReset}}, ErrPeerReset, 0},
		{"frames after CLOSE are not acted on", []wire.Frame{{Type: wire.FrameClose}, {Type: wire.FramePing},
			stf(wire.FlagSYN, 1, ""), stf(wire.FlagDAT, 2, "x"), {Type: wire.FrameReset}}, ErrPeerClosed, 1},
		{"a KEYUPDATE reaching the demux is a protocol error", []wire.Frame{{Type: wire.FrameKeyUpdate, Payload: make([]byte, 32)}}, ErrProtocol, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newDemuxRig(t, Server, &testFrontend{mode: "refuse"}, nil)
			for _, f := range tc.frames {
				r.send(f)
			}
			var err error
			if tc.want == ErrInsecureClose || tc.want == ErrPeerClosed {
				err = r.end()
			} else {
				err = r.wait()
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("Run: %v, want %v", err, tc.want)
			}
			if len(r.control) != 0 || r.fe.opens.Load() != 0 {
				t.Errorf("%d answers and %d streams opened, want none", len(r.control), r.fe.opens.Load())
			}
			if n := r.closes.Load(); n != tc.closes {
				t.Errorf("PeerClosing called %d times, want %d", n, tc.closes)
			}
		})
	}
}

// A flood of PINGs while nobody takes the answers: the demux drops and
// counts what does not fit and never blocks.
func TestDemuxPingFlood(t *testing.T) {
	const queue, pings = 8, 500
	fe := &testFrontend{mode: "refuse"}
	ctl := make(chan Frame, queue)
	r := newDemuxRig(t, Server, fe, func(d *Demux) { d.Control = ctl })
	for i := 0; i < pings; i++ {
		r.send(wire.Frame{Type: wire.FramePing, Payload: []byte{byte(i)}})
	}
	if err := r.end(); !errors.Is(err, ErrInsecureClose) {
		t.Fatalf("Run: %v", err)
	}
	if len(ctl) != queue {
		t.Fatalf("%d PONGs queued, want %d", len(ctl), queue)
	}
	if n := r.d.Stats.ControlDropped.Load(); n != pings-queue {
		t.Fatalf("ControlDropped %d, want %d", n, pings-queue)
	}
}

// The client's end of a datagram association: the server's empty DATAGRAM
// opens it once (the relay's reply reaches the app in the stream), data
// goes to the relay, and the relay forgets the stream when it ends.
func TestDemuxClientDatagrams(t *testing.T) {
	relay := &testRelay{}
	accept := make(chan net.Conn)
	r := newDemuxRig(t, Client, &testFrontend{}, func(d *Demux) { d.Accept = accept; d.Relay = relay })
	app, local := net.Pipe()
	defer app.Close()
	accept <- local
	var syn Frame
	select {
	case syn = <-r.data:
	case <-time.After(10 * time.Second):
		t.Fatal("no SYN for the local connection")
	}
	if syn.Flags != wire.FlagSYN {
		t.Fatalf("first frame %v, want SYN", syn.Frame)
	}
	id := syn.Stream
	// Before the app asked for an association (a TCP stream, as far as
	// the client knows), an empty DATAGRAM injects nothing.
	r.send(wire.Frame{Type: wire.FrameDatagram, Stream: id})
	go func() { _, _ = app.Write([]byte("ASSOCIATE")) }()
	select {
	case f := <-r.data:
		if string(f.Payload) != "ASSOCIATE" {
			t.Fatalf("up frame %v %q, want the app's request", f.Frame, f.Payload)
		}
		f.Release()
	case <-time.After(10 * time.Second):
		t.Fatal("the app's request did not go up")
	}
	r.send(wire.Frame{Type: wire.FrameDatagram, Stream: id})
	r.send(wire.Frame{Type: wire.FrameDatagram, Stream: id}) // a second one is ignored
	r.send(wire.Frame{Type: wire.FrameDatagram, Stream: id, Payload: []byte("dgram")})
	if got := r.answers(); len(got) != 0 {
		t.Fatalf("answers %s, want none", frameList(got))
	}
	reply := make([]byte, 16)
	_ = app.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := app.Read(reply)
	if err != nil || string(reply[:n]) != "ready" {
		t.Fatalf("app read %q, %v; want the relay's reply once", reply[:n], err)
	}
	r.send(stf(wire.FlagRST, id, ""))
	// The reset stream's actor ends and the relay forgets it; nothing more
	// reached the app.
	_ = app.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := app.Read(reply); err == nil {
		t.Fatalf("app read %q after the reply, want the end of the stream", reply[:n])
	}
	if err := r.stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	relay.mu.Lock()
	defer relay.mu.Unlock()
	if len(relay.opened) != 1 || relay.opened[0] != id {
		t.Errorf("relay opened %v, want [%d] once", relay.opened, id)
	}
	if len(relay.delivered) != 1 || string(relay.delivered[0]) != "dgram" {
		t.Errorf("relay got %q, want one \"dgram\"", relay.delivered)
	}
	if len(relay.closed) != 1 || relay.closed[0] != id {
		t.Errorf("relay closed %v, want [%d]", relay.closed, id)
	}
}

func repeatFrame(f wire.Frame, n int) []wire.Frame {
	fs := make([]wire.Frame, n)
	for i := range fs {
		fs[i] = f
	}
	return fs
}
