package stages

import (
	"context"
	"math/rand/v2"
	"reflect"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"usocks/wire"
)

// TestShaperShiftMovesEveryInstant: shift moves every instant the shaper
// keeps (found by reflection, so that a field added later without a
// line in shift fails here), and leaves zero ones ("not set") alone.
func TestShaperShiftMovesEveryInstant(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const d = 750 * time.Millisecond
	s := newShaper(DefencePolicy(wire.DefenceStandard, Client), nil)
	v := reflect.ValueOf(s).Elem()
	timeT := reflect.TypeFor[time.Time]()
	var fields []string
	for i := range v.NumField() {
		f := v.Field(i)
		switch {
		case f.Type() == timeT:
			fields = append(fields, v.Type().Field(i).Name)
			reflect.NewAt(f.Type(), f.Addr().UnsafePointer()).Elem().Set(reflect.ValueOf(base.Add(time.Duration(i) * time.Second)))
		case f.Type() == reflect.SliceOf(timeT):
			fields = append(fields, v.Type().Field(i).Name)
			reflect.NewAt(f.Type(), f.Addr().UnsafePointer()).Elem().Set(reflect.ValueOf([]time.Time{base, base.Add(time.Second)}))
		}
	}
	if len(fields) < 10 {
		t.Fatalf("found only the instants %v", fields)
	}
	s.shift(d)
	for i := range v.NumField() {
		f := v.Field(i)
		name := v.Type().Field(i).Name
		switch {
		case f.Type() == timeT:
			got := reflect.NewAt(f.Type(), f.Addr().UnsafePointer()).Elem().Interface().(time.Time)
			if want := base.Add(time.Duration(i)*time.Second + d); !got.Equal(want) {
				t.Errorf("%s: %v after shift, want %v", name, got, want)
			}
		case f.Type() == reflect.SliceOf(timeT):
			got := reflect.NewAt(f.Type(), f.Addr().UnsafePointer()).Elem().Interface().([]time.Time)
			if !got[0].Equal(base.Add(d)) || !got[1].Equal(base.Add(time.Second+d)) {
				t.Errorf("%s: %v after shift", name, got)
			}
		}
	}
	z := newShaper(DefencePolicy(wire.DefenceStandard, Client), nil)
	z.shift(d)
	if !z.fadeAt.IsZero() || !z.lastData.IsZero() {
		t.Errorf("zero instants moved: %v %v", z.fadeAt, z.lastData)
	}
}

// TestDefenceCarriesEpisodeAcrossLinks: a client's upload that became
// bulk on one link (past standard's 1 MiB) stays bulk on the next link of
// the session, even after a pause between the links longer than the idle
// time (a slow resumption): 256 KiB more go out at once. Without the
// carry the new link starts a new episode, paced at 200 cells/s (about a
// second for the same 256 KiB).
func TestDefenceCarriesEpisodeAcrossLinks(t *testing.T) {
	p := DefencePolicy(wire.DefenceStandard, Client)
	// link runs one link's stage: it sends n bytes in 16 KiB frames and
	// returns how long (fake time) until the last of them went out.
	link := func(c *DefenceCarry, n int) time.Duration {
		in := make(chan Batch)
		out := make(chan Batch, BatchQueueLen) // as a link's: the stage's ring of batches assumes it
		d := &Defence{Params: p, In: in, Out: out, Rand: rand.New(rand.NewPCG(1, 2)), Carry: c}
		done := make(chan error, 1)
		go func() { done <- d.Run(context.Background()) }()
		start := time.Now()
		var last, got atomic.Int64
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for b := range out {
				for _, f := range b {
					if f.Type == wire.FrameStream && len(f.Payload) > 0 {
						got.Add(int64(len(f.Payload)))
						last.Store(time.Now().UnixNano())
					}
				}
			}
		}()
		for sent := 0; sent < n; sent += wire.MaxPayloadLen {
			in <- dataBatch(min(wire.MaxPayloadLen, n-sent))
		}
		for {
			synctest.Wait()
			if got.Load() >= int64(n) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		close(in)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		<-drained
		return time.Unix(0, last.Load()).Sub(start)
	}
	for _, carry := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			var c *DefenceCarry
			if carry {
				c = new(DefenceCarry)
			}
			first := link(c, 3<<19) // 1.5 MiB: paced, then bulk
			time.Sleep(500 * time.Millisecond)
			second := link(c, 256<<10)
			t.Logf("carry %v: 1.5 MiB in %v, then 256 KiB in %v", carry, first, second)
			if carry && second > 10*time.Millisecond {
				t.Errorf("with the carry the next link took %v for 256 KiB of a bulk upload", second)
			}
			if !carry && second < 500*time.Millisecond {
				t.Errorf("without the carry 256 KiB took only %v: the test shows nothing", second)
			}
		})
	}
}
