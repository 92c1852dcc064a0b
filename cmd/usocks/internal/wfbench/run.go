package wfbench

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/runner"
	"usocks/wire"
)

// Sample is one page load as the observer and the loader saw it.
type Sample struct {
	Page, Load int
	Trace      []Packet
	PLT        time.Duration // first request to last byte at the loader
	App        int64         // application bytes of the load
}

// RunResult is one (policy, link) run: one tunnel session serving every
// load in sequence.
type RunResult struct {
	Policy, Link string
	Samples      []Sample
	// AppBytes and WireBytes are the whole session's application bytes
	// and link bytes (headers included), idle time between loads too.
	AppBytes, WireBytes int64
	Sessions            int64
	Elapsed             time.Duration
}

// RunOptions is one run's setup.
type RunOptions struct {
	Pages, Loads int
	Seed         uint64
	// Gap is the idle time from a load's last byte to the next load;
	// Tail is how long after the last byte a trace runs (Tail ≤ Gap).
	Gap, Tail time.Duration
	Policy    Policy
	Link      Link
	// Log gets the tunnel's log lines (nil: discarded); Progress, if
	// set, is called after each load.
	Log      io.Writer
	Progress func(done, total int)
}

// Run starts a target, a tunnel with the policy and the recorder on the
// link between its ends, loads every page Loads times (rounds of all
// pages in a seeded random order), and returns the traces.
func Run(ctx context.Context, o RunOptions) (*RunResult, error) {
	if o.Tail > o.Gap {
		return nil, fmt.Errorf("trace tail %v longer than the gap %v between loads", o.Tail, o.Gap)
	}
	start := time.Now()
	tg, err := StartTarget(o.Seed)
	if err != nil {
		return nil, err
	}
	defer tg.Close()
	var (
		rec        *Recorder
		appAddr    string
		srv        *runner.Server
		stopTunnel = func() {}
	)
	if o.Policy.Direct {
		if rec, err = StartRecorder(tg.Addr(), o.Link); err != nil {
			return nil, err
		}
		appAddr = rec.Addr()
	} else {
		if rec, srv, appAddr, stopTunnel, err = startTunnel(ctx, o, tg); err != nil {
			return nil, err
		}
		defer stopTunnel()
	}
	defer rec.Close()

	res := &RunResult{Policy: o.Policy.Name, Link: o.Link.Name}
	ld := &Loader{Seed: o.Seed, Addr: appAddr}
	type window struct{ from, to time.Duration }
	var wins []window
	r := rand.New(rand.NewPCG(o.Seed, 99))
	total := o.Pages * o.Loads
	for l := range o.Loads {
		for _, p := range r.Perm(o.Pages) {
			plan := BasePage(o.Seed, p).Load(o.Seed, p, l)
			app0 := ld.App.Load()
			lr, err := ld.Load(ctx, plan, p, l)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", o.Policy.Name, o.Link.Name, err)
			}
			// Connection closes through the tunnel are part of the load.
			time.Sleep(50 * time.Millisecond)
			res.Samples = append(res.Samples, Sample{Page: p, Load: l, PLT: lr.LastByte.Sub(lr.Start), App: ld.App.Load() - app0})
			wins = append(wins, window{rec.Since(lr.Start), rec.Since(lr.LastByte.Add(o.Tail))})
			if o.Progress != nil {
				o.Progress(len(res.Samples), total)
			}
			select {
			case <-time.After(time.Until(lr.LastByte.Add(o.Gap))):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	if srv != nil {
		res.Sessions = srv.Sessions.Load()
	}
	stopTunnel() // the client closes its session gracefully
	rec.Close()
	for i, w := range wins {
		// A trace starts at the load's first packet.
		tr := rec.Window(w.from, w.to)
		for j := len(tr) - 1; j >= 0; j-- {
			tr[j].T -= tr[0].T
		}
		res.Samples[i].Trace = tr
	}
	res.AppBytes = ld.App.Load()
	res.WireBytes = rec.WireBytes()
	res.Elapsed = time.Since(start)
	return res, nil
}

// startTunnel starts a usocks server and client with the run's policy,
// the recorder between them, and waits for the session. It returns the
// client's listener address and a stop function.
func startTunnel(ctx context.Context, o RunOptions, tg *Target) (rec *Recorder, srv *runner.Server, appAddr string, stop func(), err error) {
	var closers []func()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		})
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, "", stop, err
	}
	closers = append(closers, func() { _ = sln.Close() })
	if rec, err = StartRecorder(sln.Addr().String(), o.Link); err != nil {
		return nil, nil, "", stop, err
	}
	closers = append(closers, rec.Close)
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, "", stop, err
	}
	closers = append(closers, func() { _ = cln.Close() })
	key, err := wire.GenerateKey(crand.Reader)
	if err != nil {
		return nil, nil, "", stop, err
	}
	ccfg, scfg, err := o.Policy.Configs(key, cln.Addr().(*net.TCPAddr).Port, rec.Port(), tg.ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		return nil, nil, "", stop, fmt.Errorf("policy %s: %w", o.Policy.Name, err)
	}
	scfg.Backend.Port = sln.Addr().(*net.TCPAddr).Port
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	if o.Log != nil {
		logger.SetOutput(o.Log)
	}
	if srv, err = runner.NewServer(scfg, logger); err != nil {
		return nil, nil, "", stop, err
	}
	cli, err := runner.NewClient(ccfg, logger)
	if err != nil {
		return nil, nil, "", stop, err
	}
	srv.UseListener(sln)
	cli.UseListener(cln)
	// A server refuses first flights stamped in its start second (replay
	// protection across restarts); the client retries at once.
	cli.Backoff.Min, cli.Backoff.Max = 50*time.Millisecond, 500*time.Millisecond
	tctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, f := range []func(context.Context) error{srv.Run, cli.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(tctx); err != nil {
				errs <- err
			}
		}()
	}
	closers = append(closers, func() { cancel(); wg.Wait() })
	select {
	case <-cli.Sessions:
	case err = <-errs:
	case <-time.After(10 * time.Second):
		err = errors.New("no tunnel session within 10s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	return rec, srv, cli.Addr().String(), stop, err
}
