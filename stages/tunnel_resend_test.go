package stages

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// dataFrame is a DAT frame on stream 1 whose payload says its number.
func dataFrame(n uint64, size int) Frame {
	p := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(p, n)
	return Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: p}}
}

func frameNumber(t *testing.T, f Frame) uint64 {
	t.Helper()
	if f.Type != wire.FrameStream || len(f.Payload) < 8 {
		t.Fatalf("unexpected frame %v", f.Frame)
	}
	return binary.BigEndian.Uint64(f.Payload)
}

type resendRig struct {
	t      *testing.T
	in     chan Batch
	st     *ResumeState
	r      *Resend
	cancel context.CancelFunc
	done   chan error
}

func startResend(t *testing.T, limit int) *resendRig {
	return startResendDelay(t, limit, time.Hour) // ACKs only by count
}

// startResendDelay is startResend with an ACK delay (0: the default).
func startResendDelay(t *testing.T, limit int, ackDelay time.Duration) *resendRig {
	ctx, cancel := context.WithCancel(context.Background())
	g := &resendRig{t: t, in: make(chan Batch), st: NewResumeState(), cancel: cancel, done: make(chan error, 1)}
	g.r = &Resend{In: g.in, State: g.st, Limit: limit, Log: logrus.NewEntry(logrus.New()), AckDelay: ackDelay}
	g.r.Init()
	go func() { g.done <- g.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-g.done })
	return g
}

func (g *resendRig) attach(peer uint64) chan Batch {
	g.t.Helper()
	out := make(chan Batch, 64)
	if err := g.r.Attach(context.Background(), out, peer); err != nil {
		g.t.Fatal(err)
	}
	return out
}

// take reads n frames (not ACKs) from out, in order.
func (g *resendRig) take(out chan Batch, n int) []uint64 {
	g.t.Helper()
	var got []uint64
	for len(got) < n {
		b, ok := <-out
		if !ok {
			g.t.Fatalf("output closed after %d frames", len(got))
		}
		for _, f := range b {
			if f.Type == wire.FrameAck {
				continue
			}
			got = append(got, frameNumber(g.t, f))
			f.Release()
		}
	}
	return got
}

func seq(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func equalU64(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestResendAckDropsAndResendsFromOffset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := startResend(t, 0)
		out := g.attach(0)
		for i := range uint64(10) {
			g.in <- Batch{dataFrame(i, 100)}
		}
		if got := g.take(out, 10); !equalU64(got, seq(0, 10)) {
			t.Fatalf("first link got %v", got)
		}
		synctest.Wait()
		if g.r.Sent() != 10 || g.r.Acked() != 0 || g.r.Kept() != 10*(resendFrameCost+100) {
			t.Fatalf("sent %d acked %d kept %d", g.r.Sent(), g.r.Acked(), g.r.Kept())
		}
		// The peer acknowledges 4: those are dropped.
		if err := g.st.acked(4); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if g.r.Acked() != 4 || g.r.Kept() != 6*(resendFrameCost+100) {
			t.Fatalf("after ACK 4: acked %d kept %d", g.r.Acked(), g.r.Kept())
		}
		// The link is lost; the next resumes at 7 (the peer got 4..6
		// without acknowledging them yet): 7..9 again, then new frames.
		g.r.Detach(context.Background())
		if _, ok := <-out; ok {
			t.Fatal("old link's input not closed on detach")
		}
		g.in <- Batch{dataFrame(10, 100)}
		out2 := g.attach(7)
		if got := g.take(out2, 4); !equalU64(got, seq(7, 11)) {
			t.Fatalf("second link got %v, want 7..10", got)
		}
		synctest.Wait()
		if g.r.Acked() != 7 {
			t.Fatalf("attach at 7 left acked at %d", g.r.Acked())
		}
		// A resumption outside what the buffer holds is refused.
		g.r.Detach(context.Background())
		for _, peer := range []uint64{3, 12} {
			if err := g.r.Attach(context.Background(), make(chan Batch, 1), peer); !errors.Is(err, ErrBadAck) {
				t.Errorf("attach at %d: %v, want ErrBadAck", peer, err)
			}
		}
	})
}

func TestResendBackPressureAtLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 1000
		limit := 5 * (resendFrameCost + size)
		g := startResend(t, limit)
		// Detached: frames are kept until the limit, then the stage stops
		// taking (the mux blocks), and nothing is dropped.
		for i := range uint64(5) {
			g.in <- Batch{dataFrame(i, size)}
		}
		synctest.Wait()
		select {
		case g.in <- Batch{dataFrame(5, size)}:
			t.Fatal("took a frame beyond the limit")
		default:
		}
		if g.r.Kept() != int64(limit) {
			t.Fatalf("kept %d, want %d", g.r.Kept(), limit)
		}
		out := g.attach(0)
		if got := g.take(out, 5); !equalU64(got, seq(0, 5)) {
			t.Fatalf("got %v", got)
		}
		// Still full until the peer acknowledges.
		synctest.Wait()
		select {
		case g.in <- Batch{dataFrame(5, size)}:
			t.Fatal("took a frame beyond the limit before any ACK")
		default:
		}
		if err := g.st.acked(2); err != nil {
			t.Fatal(err)
		}
		g.in <- Batch{dataFrame(5, size)}
		g.in <- Batch{dataFrame(6, size)}
		if got := g.take(out, 2); !equalU64(got, seq(5, 7)) {
			t.Fatalf("after ACK got %v", got)
		}
		// An ACK beyond what was sent is a protocol error.
		if err := g.st.acked(100); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := <-g.done; !errors.Is(err, ErrBadAck) || !errors.Is(err, ErrProtocol) {
			t.Fatalf("Run = %v, want ErrBadAck", err)
		}
		g.done <- nil // for the cleanup
		// An ACK below an earlier one is refused where it arrives.
		if err := g.st.acked(50); !errors.Is(err, ErrBadAck) {
			t.Fatalf("decreasing ACK: %v", err)
		}
	})
}

func TestResendSendsAcks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := startResend(t, 0)
		out := g.attach(0)
		// 32 numbered frames received: an ACK at once.
		for range DefaultAckFrames {
			g.st.delivered(10)
		}
		b := <-out
		if len(b) != 1 || b[0].Type != wire.FrameAck || wire.AckCount(&b[0].Frame) != DefaultAckFrames {
			t.Fatalf("want one ACK of %d, got %v", DefaultAckFrames, b)
		}
		// 64 KiB in fewer frames: an ACK too.
		g.st.delivered(DefaultAckBytes)
		b = <-out
		if len(b) != 1 || wire.AckCount(&b[0].Frame) != DefaultAckFrames+1 {
			t.Fatalf("want an ACK of %d after 64 KiB, got %v", DefaultAckFrames+1, b)
		}
		// ACKs ride along with data.
		g.in <- Batch{dataFrame(0, 10)}
		g.st.delivered(10)
		for range DefaultAckFrames {
			g.st.delivered(1)
		}
		var sawData, sawAck bool
		for !sawData || !sawAck {
			for _, f := range <-out {
				sawData = sawData || f.Type == wire.FrameStream
				sawAck = sawAck || f.Type == wire.FrameAck
			}
		}
	})
}

func TestResendAckTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := startResendDelay(t, 0, 0)
		out := g.attach(0)
		start := time.Now()
		g.st.delivered(5)
		b := <-out
		if wait := time.Since(start); wait != DefaultAckDelay {
			t.Errorf("ACK after %v, want %v", wait, DefaultAckDelay)
		}
		if len(b) != 1 || wire.AckCount(&b[0].Frame) != 1 {
			t.Fatalf("got %v", b)
		}
	})
}

// TestResendAckWakes: a delivery wakes the send side only when it has
// something to do (the first frame after an ACK arms the timer; the
// count or byte threshold sends an ACK), and however deliveries and the
// stage interleave, every frame is acknowledged within the ACK delay:
// bursts of 1 to 70 frames from a goroutine of their own, each burst
// after the previous one's ACK.
func TestResendAckWakes(t *testing.T) {
	t.Run("thresholds", func(t *testing.T) {
		st := NewResumeState()
		st.wakeAt.Store(3)
		st.wakeBytes.Store(100)
		for i := range 2 {
			st.delivered(10)
			if len(st.wake) != 0 {
				t.Fatalf("frame %d below both thresholds woke the send side", i+1)
			}
		}
		st.delivered(10)
		if len(st.wake) != 1 {
			t.Fatal("the frame at the count threshold did not wake the send side")
		}
		<-st.wake
		st.wakeAt.Store(100)
		st.delivered(70)
		if len(st.wake) != 1 {
			t.Fatal("the byte threshold did not wake the send side")
		}
	})
	t.Run("no ack lost", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := startResendDelay(t, 0, 0)
			st, out := g.st, g.attach(0)
			total := uint64(0)
			for burst := range 60 {
				n := uint64(1 + burst*37%70)
				go func() {
					for range n {
						st.delivered(100)
					}
				}()
				total += n
				start := time.Now()
				for acked := uint64(0); acked < total; {
					b := <-out
					if len(b) != 1 || b[0].Type != wire.FrameAck {
						t.Fatalf("burst %d: got %v", burst, b)
					}
					acked = wire.AckCount(&b[0].Frame)
				}
				if wait := time.Since(start); wait > DefaultAckDelay {
					t.Fatalf("burst %d of %d frames acknowledged after %v, more than the delay %v", burst, n, wait, DefaultAckDelay)
				}
			}
		})
	})
}

// splitData with more marks every piece but the last with FlagMORE; the
// first keeps SYN, the last FIN.
func TestSplitDataMarksPieces(t *testing.T) {
	f := Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagSYN | wire.FlagDAT | wire.FlagFIN, Stream: 2, Payload: []byte("abcdefghij")}}
	for _, more := range []bool{false, true} {
		var got []wire.Frame
		splitData(f, 4, 4, more, func(p Frame) { got = append(got, p.Frame) })
		m := wire.Flags(0)
		if more {
			m = wire.FlagMORE
		}
		want := []struct {
			flags wire.Flags
			p     string
		}{{wire.FlagSYN | wire.FlagDAT | m, "abcd"}, {wire.FlagDAT | m, "efgh"}, {wire.FlagDAT | wire.FlagFIN, "ij"}}
		if len(got) != len(want) {
			t.Fatalf("more=%v: %d pieces", more, len(got))
		}
		for i, w := range want {
			if got[i].Flags != w.flags || string(got[i].Payload) != w.p {
				t.Errorf("more=%v piece %d: %v %q, want %v %q", more, i, got[i].Flags, got[i].Payload, w.flags, w.p)
			}
		}
	}
}

// The decrypt stage of a resumable session's link: it counts the numbered
// frames it hands on (not PAD, KEYUPDATE or ACK), takes ACKs, leaves the
// session's channel open, and calls EOF without CLOSE an insecure end.
func TestDecryptResumable(t *testing.T) {
	var key [wire.KeySize]byte
	c := wire.CipherChaCha20Poly1305
	seal := func(fs ...wire.Frame) []byte {
		a, _ := wire.NewAEAD(c, &key)
		s := wire.NewSealer(a)
		var out []byte
		for _, f := range fs {
			var err error
			if out, err = s.SealFrame(out, &f, 0); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	dat := wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: []byte("hello")}
	ack := wire.Frame{Type: wire.FrameAck, Payload: wire.AckPayload(nil, 0)}
	piece := func(fl wire.Flags, p string) wire.Frame {
		return wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT | fl, Stream: 1, Payload: []byte(p)}
	}
	cases := []struct {
		name     string
		frames   []wire.Frame
		err      error
		received uint64
		peerAck  uint64
	}{
		{"data then EOF", []wire.Frame{dat, {Type: wire.FramePad}, dat}, ErrInsecureClose, 2, 0},
		{"close then EOF", []wire.Frame{dat, {Type: wire.FrameClose}}, nil, 2, 0},
		{"reset then EOF", []wire.Frame{{Type: wire.FrameReset}}, nil, 1, 0},
		{"acks", []wire.Frame{ack, dat, {Type: wire.FrameAck, Payload: wire.AckPayload(nil, 9)}, {Type: wire.FramePing}}, ErrInsecureClose, 2, 9},
		{"decreasing ack", []wire.Frame{{Type: wire.FrameAck, Payload: wire.AckPayload(nil, 9)}, ack}, ErrBadAck, 0, 9},
		{"pieces joined", []wire.Frame{piece(wire.FlagSYN|wire.FlagMORE, "ab"), {Type: wire.FramePad}, piece(wire.FlagMORE, "cd"), piece(wire.FlagFIN, "ef"), {Type: wire.FrameClose}}, nil, 2, 0},
		{"long pieces joined twice", []wire.Frame{piece(wire.FlagMORE, string(make([]byte, 9000))), piece(0, string(make([]byte, 7384))),
			piece(wire.FlagMORE, string(make([]byte, 9000))), piece(0, string(make([]byte, 7384)))}, ErrInsecureClose, 2, 0},
		{"pieces cut short", []wire.Frame{dat, piece(wire.FlagMORE, "ab")}, ErrInsecureClose, 1, 0},
		{"pieces interrupted", []wire.Frame{piece(wire.FlagMORE, "ab"), {Type: wire.FramePing}}, ErrProtocol, 0, 0},
		{"pieces of two streams", []wire.Frame{piece(wire.FlagMORE, "ab"), {Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 2, Payload: []byte("x")}}, ErrProtocol, 0, 0},
		{"more without data", []wire.Frame{{Type: wire.FrameStream, Flags: wire.FlagFIN | wire.FlagMORE, Stream: 1}}, ErrProtocol, 0, 0},
		{"joined too long", []wire.Frame{piece(wire.FlagMORE, string(make([]byte, 10000))), piece(0, string(make([]byte, 7000)))}, ErrProtocol, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			oa, _ := wire.NewAEAD(c, &key)
			in := make(chan Chunk, 1)
			out := make(chan Frame, 16)
			st := NewResumeState()
			d := &Decrypt{Opener: wire.NewOpener(oa), In: in, Out: out, Resume: st}
			in <- Chunk{B: seal(tc.frames...)}
			close(in)
			if err := d.Run(context.Background()); !errors.Is(err, tc.err) {
				t.Fatalf("Run = %v, want %v", err, tc.err)
			}
			if st.Received() != tc.received || uint64(len(out)) != tc.received || st.peerAck.Load() != tc.peerAck {
				t.Fatalf("received %d, queued %d, peer ack %d; want %d, %d", st.Received(), len(out), st.peerAck.Load(), tc.received, tc.peerAck)
			}
			if tc.name == "pieces joined" {
				f := <-out
				if f.Flags != wire.FlagSYN|wire.FlagDAT|wire.FlagFIN || string(f.Payload) != "abcdef" {
					t.Fatalf("joined frame %v %q", f.Frame, f.Payload)
				}
				out <- f
			}
			select {
			case out <- Frame{}: // still open: the session's, not the link's
			default:
				t.Fatal("out is full")
			}
		})
	}
	// Without resumption an ACK is a protocol error.
	oa, _ := wire.NewAEAD(c, &key)
	in := make(chan Chunk, 1)
	in <- Chunk{B: seal(ack)}
	close(in)
	d := &Decrypt{Opener: wire.NewOpener(oa), In: in, Out: make(chan Frame, 1)}
	if err := d.Run(context.Background()); !errors.Is(err, ErrProtocol) {
		t.Fatalf("ACK without resumption: %v", err)
	}
}

// TestResendIdleAfterBulk: once a bulk transfer is acknowledged, the
// buffer gives its queue back (an idle session keeps no resend memory),
// and frames resent after a detach go in batches no larger than the
// mux's (encrypt keeps a batch's sealed buffer for the next ones).
func TestResendIdleAfterBulk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const frames, size = 200, 16 << 10
		g := startResend(t, 0)
		// Detached: the whole transfer waits in the buffer.
		for i := range uint64(frames) {
			g.in <- Batch{dataFrame(i, size)}
		}
		synctest.Wait()
		if h := g.r.held(); h < frames {
			t.Fatalf("queue holds %d frames, want ≥ %d", h, frames)
		}
		out := g.attach(0)
		var got []uint64
		for len(got) < frames {
			b := <-out
			n := 0
			for _, f := range b {
				n += len(f.Payload)
				got = append(got, frameNumber(t, f))
				f.Release()
			}
			if len(b) > 1 && n > maxBatchBytes+size {
				t.Fatalf("a batch of %d frames, %d payload bytes (> %d)", len(b), n, maxBatchBytes+size)
			}
		}
		if !equalU64(got, seq(0, frames)) {
			t.Fatalf("got %v", got)
		}
		if err := g.st.acked(frames); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if g.r.Acked() != frames || g.r.Kept() != 0 || g.r.held() > resendIdleCap {
			t.Fatalf("acknowledged %d: kept %d bytes, queue capacity %d frames (want 0, ≤ %d)",
				g.r.Acked(), g.r.Kept(), g.r.held(), resendIdleCap)
		}
		// A few more frames later reuse a small queue.
		g.in <- Batch{dataFrame(frames, 100)}
		if got := g.take(out, 1); !equalU64(got, []uint64{frames}) {
			t.Fatalf("after idle got %v", got)
		}
	})
}

// TestResendEndKeepsHandedFrames: when the stage ends, the frames it has
// handed to a link (numbered below next) are not returned to the pool —
// that link's encrypt may still be sealing them — and the others are.
func TestResendEndKeepsHandedFrames(t *testing.T) {
	for _, c := range []struct {
		name      string
		next      uint64
		wantFreed int
	}{
		{"nothing handed out", 10, 5},
		{"two handed out", 12, 3},
		{"all handed out", 15, 0},
		{"next below base", 8, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := resendBuf{base: 10}
			for i := range 5 {
				f := dataFrame(uint64(10+i), 16)
				f.buf = getBuf(16)
				b.push(f, 80)
			}
			if got := b.releaseFrom(c.next); got != c.wantFreed {
				t.Fatalf("freed %d frames, want %d", got, c.wantFreed)
			}
			if b.bytes != 0 || len(b.q) != 0 {
				t.Fatalf("buffer not emptied: %d bytes, %d frames", b.bytes, len(b.q))
			}
		})
	}
}

// TestResendClearsTakenBatch: the frames of a batch the stage has taken
// are cleared in the batch's array (the mux reuses its batches' arrays: a
// stale copy there would keep an acknowledged frame's payload buffer
// reachable, and a heap grown by a bulk transfer would stay).
func TestResendClearsTakenBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := startResend(t, 0)
		b := make(Batch, 0, 3)
		for i := range uint64(3) {
			f := dataFrame(i, 100)
			f.buf = getBuf(len(f.Payload))
			b = append(b, f)
		}
		g.in <- b
		synctest.Wait()
		for i := range b {
			if b[i].buf != nil || b[i].Payload != nil {
				t.Fatalf("frame %d of the taken batch still refers to its payload", i)
			}
		}
		out := g.attach(0)
		if got := g.take(out, 3); !equalU64(got, seq(0, 3)) {
			t.Fatalf("got %v", got)
		}
	})
}

// TestResendBatchRingNeverReusedInUse: the resend stage reuses small
// batch arrays, never one its consumer may still hold. The consumer here
// holds each batch while the stage fills the channel (its capacity, as
// a link's) and stalls on the next batch; the held batch must be intact
// then.
func TestResendBatchRingNeverReusedInUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := startResend(t, 0)
		out := make(chan Batch, BatchQueueLen)
		if err := g.r.Attach(context.Background(), out, 0); err != nil {
			t.Fatal(err)
		}
		sent, want := uint64(0), uint64(0)
		feed := func(n int) {
			for range n {
				g.in <- Batch{dataFrame(sent, 64)}
				sent++
				synctest.Wait()
			}
		}
		feed(1)
		for round := 0; round < 3*batchRing; round++ {
			held := <-out
			nums := make([]uint64, len(held))
			for i, f := range held {
				nums[i] = frameNumber(t, f)
			}
			feed(BatchQueueLen + 2) // the channel fills; the stage waits with the next batch built
			for i, f := range held {
				if f.Type != wire.FrameStream || frameNumber(t, f) != nums[i] {
					t.Fatalf("round %d: the held batch changed under its consumer", round)
				}
			}
			for _, n := range nums {
				if n != want {
					t.Fatalf("round %d: frame %d, want %d", round, n, want)
				}
				want++
			}
		}
	})
}
