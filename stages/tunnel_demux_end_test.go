package stages

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

// halfPipe is one end of an in-memory connection that can half-close
// (net.Pipe cannot): it reads from one pipe and writes to another.
type halfPipe struct {
	r, w net.Conn
}

func newHalfPipes() (*halfPipe, *halfPipe) {
	a1, b1 := net.Pipe()
	a2, b2 := net.Pipe()
	return &halfPipe{r: a1, w: a2}, &halfPipe{r: b2, w: b1}
}

func (p *halfPipe) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *halfPipe) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *halfPipe) CloseWrite() error           { return p.w.Close() }
func (p *halfPipe) Close() error {
	err := p.r.Close()
	return errors.Join(err, p.w.Close())
}
func (p *halfPipe) LocalAddr() net.Addr  { return p.r.LocalAddr() }
func (p *halfPipe) RemoteAddr() net.Addr { return p.r.RemoteAddr() }
func (p *halfPipe) SetDeadline(t time.Time) error {
	return errors.Join(p.r.SetDeadline(t), p.w.SetDeadline(t))
}
func (p *halfPipe) SetReadDeadline(t time.Time) error  { return p.r.SetReadDeadline(t) }
func (p *halfPipe) SetWriteDeadline(t time.Time) error { return p.w.SetWriteDeadline(t) }

// endTarget is what a target did by the session's end.
type endTarget struct {
	sum  [32]byte // SHA-256 of what it read
	n    int
	eof  bool // its read ended with a clean EOF
	done time.Time
}

// endFrontend opens targets that read slowly (a chunk per tick), or never
// ("stall"); a target that "finishes" half-closes its side first, as a
// server that has answered does.
type endFrontend struct {
	behave map[uint16]string // "finishes", "reads", "stall"
	mu     sync.Mutex
	got    map[uint16]endTarget
	wg     sync.WaitGroup
}

func (fe *endFrontend) Open(ctx context.Context, s StreamIO) (net.Conn, error) {
	local, target := newHalfPipes()
	how := fe.behave[s.ID()]
	fe.wg.Add(1)
	go func() {
		defer fe.wg.Done()
		defer target.Close()
		if how == "finishes" {
			_ = target.CloseWrite()
		}
		if how == "stall" {
			<-ctx.Done()
			return
		}
		h := sha256.New()
		buf := make([]byte, 4<<10)
		var res endTarget
		for {
			time.Sleep(10 * time.Millisecond) // a slow app
			n, err := target.Read(buf)
			h.Write(buf[:n])
			res.n += n
			if err != nil {
				res.eof = errors.Is(err, io.EOF)
				break
			}
		}
		copy(res.sum[:], h.Sum(nil))
		res.done = time.Now()
		fe.mu.Lock()
		fe.got[s.ID()] = res
		fe.mu.Unlock()
	}()
	return local, nil
}

// At the session's end (the peer's CLOSE, or ours first), a stream whose
// data and FIN reached the demux but not yet its slow local side delivers
// every byte and a clean EOF; a stream the peer had not finished is reset
// at once; a stream whose local side takes nothing is reset at the grace
// time, and the demux ends then.
func TestDemuxEndDeliversFinishedStreams(t *testing.T) {
	const size = 200 << 10 // within one window
	const grace = 2 * time.Second
	for _, ours := range []bool{false, true} {
		name := "peer CLOSE"
		if ours {
			name = "our end first"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fe := &endFrontend{behave: map[uint16]string{1: "finishes", 3: "reads", 5: "stall", 7: "reads"}, got: map[uint16]endTarget{}}
				closing := make(chan struct{})
				var mu sync.Mutex
				how := map[uint16]string{}
				r := newDemuxRig(t, Server, &testFrontend{}, func(d *Demux) {
					d.Frontend, d.Closing, d.CloseGrace = fe, closing, grace
					d.Ended = func(e StreamEnd) { mu.Lock(); how[e.ID] = e.How; mu.Unlock() }
				})
				payload := make([]byte, size)
				rng := rand.New(rand.NewPCG(1, 2))
				for i := range payload {
					payload[i] = byte(rng.Uint32())
				}
				want := sha256.Sum256(payload)
				for _, id := range []uint16{1, 3, 5, 7} {
					r.send(stf(wire.FlagSYN, id, ""))
					for off := 0; off < size; off += wire.MaxPayloadLen {
						r.send(stf(wire.FlagDAT, id, string(payload[off:min(off+wire.MaxPayloadLen, size)])))
					}
					if id != 3 {
						r.send(stf(wire.FlagFIN, id, ""))
					}
				}
				r.answers()
				start := time.Now()
				if ours {
					close(closing)
				}
				r.send(wire.Frame{Type: wire.FrameClose})
				if !ours {
					close(closing) // the session answers the peer's CLOSE
				}
				if err := r.end(); !errors.Is(err, ErrPeerClosed) {
					t.Errorf("Run: %v, want %v", err, ErrPeerClosed)
				}
				if took := time.Since(start); took != grace {
					t.Errorf("the demux ended %v after the CLOSE, want the grace time %v (a stream's local side took nothing)", took, grace)
				}
				fe.wg.Wait()
				for _, tc := range []struct {
					id       uint16
					complete bool
					how      string
				}{
					{1, true, "closed"}, // both sides finished
					{3, false, "reset"}, // the peer had not finished
					{7, true, "reset"},  // delivered, but its own side was still open
					{5, false, "reset"}, // took nothing within the grace time
				} {
					got := fe.got[tc.id]
					if complete := got.n == size && got.sum == want && got.eof; complete != tc.complete {
						t.Errorf("stream %d: target read %d of %d bytes (SHA-256 match %v), clean EOF %v; want complete %v",
							tc.id, got.n, size, got.sum == want, got.eof, tc.complete)
					}
					if tc.complete && got.done.Sub(start) >= grace {
						t.Errorf("stream %d delivered %v after the CLOSE, not before the grace time", tc.id, got.done.Sub(start))
					}
					if how[tc.id] != tc.how {
						t.Errorf("stream %d ended %q, want %q", tc.id, how[tc.id], tc.how)
					}
				}
			})
		})
	}
}
