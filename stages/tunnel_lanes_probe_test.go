package stages

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/wire"
)

// laneLog is what one lane's consumer saw: when each batch came, and
// how many of them were HEALTH probes (before and after a time).
type laneLog struct {
	at                   []time.Time
	healthBefore, health int
}

// TestLanesProbeIdle: a Lanes stage with Probe set hands every lane
// something at least every Probe: runs while the mux sends (no probes
// then), HEALTH messages (made by Health) once it is idle; without
// Probe an idle lane gets nothing.
func TestLanesProbeIdle(t *testing.T) {
	for _, tc := range []struct {
		name        string
		probe       time.Duration
		wantIdleMin int // probes per lane in the idle phase, at least
	}{
		{"probe 1s", time.Second, 4},
		{"probe off", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { probeIdleCase(t, tc.probe, tc.wantIdleMin) })
		})
	}
}

func probeIdleCase(t *testing.T, probe time.Duration, wantIdleMin int) {
	const lanes, busyFor, idleFor = 3, 3 * time.Second, 5 * time.Second
	in := make(chan Batch, BatchQueueLen)
	health := wire.Control{Type: wire.ControlHealth, Up: 3, Count: 4, Replaced: 9}
	l := &Lanes{In: in, State: NewResumeState(), Probe: probe, Health: func() wire.Control { return health },
		Log: logrus.NewEntry(logrus.New())}
	l.Init()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); errc <- l.Run(ctx) }()
	start := time.Now()
	quiet := start.Add(busyFor)
	logs := make([]laneLog, lanes)
	for id := range lanes {
		out := make(chan Batch, BatchQueueLen)
		if err := l.Add(ctx, id, out, 0); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lg := &logs[id]
			for b := range out {
				now := time.Now()
				lg.at = append(lg.at, now)
				for _, f := range b {
					if f.Type != wire.FrameControl {
						continue
					}
					c, _, err := wire.ParseControl(f.Payload)
					if err != nil || (c.Type == wire.ControlHealth && c != health) {
						t.Errorf("lane %d: control %+v, %v", id, c, err)
					}
					if c.Type == wire.ControlHealth && now.Before(quiet) {
						lg.healthBefore++
					} else if c.Type == wire.ControlHealth {
						lg.health++
					}
				}
			}
		}()
	}
	// The mux sends a frame every 50 ms (each lane gets one about every
	// 150 ms), then nothing.
	for i := uint64(0); time.Since(start) < busyFor; i++ {
		in <- Batch{dataFrame(i, 64)}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(idleFor)
	cancel()
	wg.Wait()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	end := start.Add(busyFor + idleFor)
	for id, lg := range logs {
		if lg.healthBefore != 0 || lg.health < wantIdleMin || (probe == 0 && lg.health != 0) {
			t.Errorf("lane %d: %d probes while busy, %d idle (want 0, at least %d)", id, lg.healthBefore, lg.health, wantIdleMin)
		}
		if probe == 0 {
			continue
		}
		// No gap longer than Probe, from the start to the end.
		prev := start
		for _, at := range append(lg.at, end) {
			if gap := at.Sub(prev); gap > probe {
				t.Errorf("lane %d: nothing for %v at %v (probe %v)", id, gap, prev.Sub(start), probe)
			}
			prev = at
		}
	}
	if probe > 0 && l.Probes() == 0 {
		t.Errorf("Probes() = 0")
	}
}

// TestLaneWatch: Watch ends a lane silent for the timeout (within 9/8 of
// it), and only then: not while records come, not while the session is
// not alive, and returns nil when its context ends.
func TestLaneWatch(t *testing.T) {
	const timeout = time.Second
	for _, tc := range []struct {
		name   string
		every  time.Duration // a record this often...
		until  time.Duration // ...until then
		alive  bool
		silent bool // Watch declares the lane silent
	}{
		{"records stop", 100 * time.Millisecond, 3 * time.Second, true, true},
		{"no record at all", 0, 0, true, true},
		{"records just often enough", 900 * time.Millisecond, 10 * time.Second, true, false},
		{"session not alive", 0, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				in := &LaneIn{}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				start := time.Now()
				var ended time.Time
				done := make(chan error, 1)
				go func() {
					err := in.Watch(ctx, timeout, func() bool { return tc.alive })
					ended = time.Now()
					done <- err
				}()
				for tc.every > 0 && time.Since(start) < tc.until {
					time.Sleep(tc.every)
					in.Seen()
				}
				last := time.Now()
				err := <-done
				if !tc.silent {
					if err != nil || ended.Sub(start) != 10*time.Second {
						t.Fatalf("Watch: %v after %v, want nil at the context's end", err, ended.Sub(start))
					}
					return
				}
				if !errors.Is(err, ErrLaneSilent) || !errors.Is(err, ErrPeerDead) {
					t.Fatalf("Watch: %v", err)
				}
				if d := ended.Sub(last); d < timeout || d > timeout*9/8 {
					t.Fatalf("declared silent %v after the last record, want %v..%v", d, timeout, timeout*9/8)
				}
			})
		})
	}
}

// TestLaneProbeBounds: the probe interval stays well inside the timeout
// (and inside MaxLaneProbe); keepalive off turns both off.
func TestLaneProbeBounds(t *testing.T) {
	for _, k := range []time.Duration{0, time.Second, 15 * time.Second, time.Minute} {
		p, to := LaneProbe(k), LaneTimeout(k)
		if k == 0 {
			if p != 0 || to != 0 {
				t.Errorf("keepalive off: probe %v timeout %v", p, to)
			}
			continue
		}
		if p <= 0 || p > MaxLaneProbe || 4*p > to {
			t.Errorf("keepalive %v: probe %v timeout %v", k, p, to)
		}
	}
}
