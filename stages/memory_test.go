package stages

import (
	"context"
	"crypto/rand"
	"runtime"
	"strings"
	"testing"
	"time"

	"usocks/wire"
)

func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestPaddedRecordsKeepOnlyTheirPayload: 2,001 records of one payload
// byte and a full record body of padding, for a stream whose socket takes
// nothing, cost the receiver what it keeps (the 2,001 bytes), not the
// bodies (2,001 × 64 KiB = 125 MiB before compaction).
func TestPaddedRecordsKeepOnlyTheirPayload(t *testing.T) {
	const records = 2001
	mem := NewMemBudget(0, nil)
	r := newDemuxRig(t, Server, &testFrontend{mode: "block"}, func(d *Demux) { d.Memory = mem })
	var key [wire.KeySize]byte
	_, _ = rand.Read(key[:])
	sa, _ := wire.NewAEAD(wire.CipherChaCha20Poly1305, &key)
	oa, _ := wire.NewAEAD(wire.CipherChaCha20Poly1305, &key)
	sealer := wire.NewSealer(sa)
	chunks := make(chan Chunk)
	frames := make(chan Frame)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dec := &Decrypt{Opener: wire.NewOpener(oa), In: chunks, Out: frames, Log: testLog()}
	decDone := make(chan error, 1)
	go func() { decDone <- dec.Run(ctx) }()
	before := heapInUse()
	go func() {
		defer close(chunks)
		seal := func(f wire.Frame, pad int) bool {
			rec, err := sealer.SealFrame(nil, &f, pad)
			if err != nil {
				return false
			}
			select {
			case chunks <- Chunk{B: rec}:
				return true
			case <-ctx.Done():
				return false
			}
		}
		if !seal(wire.Frame{Type: wire.FrameStream, Flags: wire.FlagSYN, Stream: 1}, 0) {
			return
		}
		for i := 0; i < records; i++ {
			f := wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: []byte{byte(i)}}
			if !seal(f, wire.MaxBodyLen-wire.FrameHeaderLen-1) {
				return
			}
		}
	}()
	n := 0
	for f := range frames {
		select {
		case r.in <- f:
			n++
		case <-time.After(10 * time.Second):
			t.Fatalf("demux does not take frame %d", n)
		}
	}
	if err := <-decDone; err != nil || n != records+1 {
		t.Fatalf("decrypt: %v after %d frames", err, n)
	}
	if a := r.answers(); len(a) != 0 {
		t.Fatalf("answers %s: the stream is within its window", frameList(a))
	}
	grown := heapInUse() - before
	t.Logf("heap grew by %d bytes; the session's budget holds %d", grown, mem.Used())
	if grown > 8<<20 {
		t.Fatalf("heap grew by %d MiB for %d payload bytes", grown>>20, records)
	}
	if mem.Used() > 2*smallBufSize {
		t.Fatalf("the stream keeps %d bytes for %d payload bytes", mem.Used(), records)
	}
	_ = r.stop()
	if mem.Used() != 0 {
		t.Fatalf("%d bytes still charged after the session", mem.Used())
	}
}

// TestMemoryBudgetResetsStream: a stream whose buffered data would pass
// the session's budget is reset (RST), inside its flow-control window; the
// budget and its parents are whole again afterwards.
func TestMemoryBudgetResetsStream(t *testing.T) {
	total := NewMemBudget(1<<20, nil)
	user := NewMemBudget(1<<20, total)
	mem := NewMemBudget(64<<10, user)
	r := newDemuxRig(t, Server, &testFrontend{mode: "block"}, func(d *Demux) { d.Memory = mem })
	r.send(stf(wire.FlagSYN, 1, ""))
	r.send(stf(wire.FlagSYN, 3, ""))
	chunk := strings.Repeat("m", 3000)
	for i := 0; i < 21; i++ { // 21 × 3 KiB: within the budget
		r.send(stf(wire.FlagDAT, 1, chunk))
	}
	if a := r.answers(); len(a) != 0 {
		t.Fatalf("within the budget: %s", frameList(a))
	}
	r.send(stf(wire.FlagDAT, 3, chunk)) // the 22nd chunk passes it
	if a := r.answers(); !sameFrames(a, []wire.Frame{rstOf(3)}) {
		t.Fatalf("past the budget: %s, want the stream reset", frameList(a))
	}
	want := 21 * int64(cap([]byte(append([]byte(nil), chunk...)))) // as r.send copies
	if got := total.Used(); got != want || user.Used() != want {
		t.Fatalf("charged %d (user %d), want %d for the stream still open", got, user.Used(), want)
	}
	_ = r.stop()
	if mem.Used() != 0 || user.Used() != 0 || total.Used() != 0 {
		t.Fatalf("still charged: session %d user %d total %d", mem.Used(), user.Used(), total.Used())
	}
}

func TestMemBudgetChain(t *testing.T) {
	total := NewMemBudget(100, nil)
	u1 := NewMemBudget(60, total)
	u2 := NewMemBudget(0, total) // no limit of its own
	for _, tc := range []struct {
		b    *MemBudget
		n    int64
		ok   bool
		want [3]int64 // total, u1, u2 after
	}{
		{u1, 50, true, [3]int64{50, 50, 0}},
		{u1, 20, false, [3]int64{50, 50, 0}}, // u1's own limit
		{u2, 40, true, [3]int64{90, 50, 40}},
		{u2, 20, false, [3]int64{90, 50, 40}}, // total's limit
		{u1, 10, true, [3]int64{100, 60, 40}},
		{nil, 1 << 40, true, [3]int64{100, 60, 40}},
	} {
		if got := tc.b.take(tc.n); got != tc.ok {
			t.Fatalf("take(%d) = %v", tc.n, got)
		}
		if got := [3]int64{total.Used(), u1.Used(), u2.Used()}; got != tc.want {
			t.Fatalf("after take(%d): %v, want %v", tc.n, got, tc.want)
		}
	}
}
