package runner

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"usocks/runner/capture"
	"usocks/stages"
	"usocks/wire"
	v1 "usocks/wire/v1"
)

// A session is the unit of restart: every stage that shares one backend
// connection and one key state runs in one errgroup. When a stage fails the
// session ends — after telling the peer with a RESET record where that
// helps — and the client then builds a new session (new connection, new
// keys, new channels). Streams are reset, never carried over.
//
//	backend reader ─► decrypt ─► demux ─► stream actors ─► local sockets
//	backend writer ◄─ encrypt ◄─ mux ◄──── stream actors ◄─ local sockets
//
// Ending: a clean end (ctx done here, or CLOSE from the peer) makes the mux
// send CLOSE as its last frame; the session then waits up to GraceTimeout
// for the peer's CLOSE and EOF. A failure makes the mux send RESET (v2, or
// v1 after a bad digest or header) or nothing (v1's first-packet rule), and
// the session is cut as soon as the writer has flushed.

// GraceTimeout bounds a graceful close: after sending CLOSE, how long the
// session waits for the peer's CLOSE and EOF before it is cut.
const GraceTimeout = 3 * time.Second

// v1Keys is the record state of a v1 session.
type v1Keys struct {
	seal *v1.Sealer
	open *v1.Opener
}

// sessionParams is everything one session needs.
type sessionParams struct {
	role       stages.Role
	conn       net.Conn
	keys       *stages.Keys // v2
	v1         *v1Keys      // v1 (legacy); keys is nil then
	accept     <-chan net.Conn
	frontend   stages.Frontend
	maxStreams int
	idle, half time.Duration        // stream timeouts (≤ 0: off)
	keepalive  time.Duration        // PING interval (0: off)
	tuning     *DefenseTuning       // v2: expert overrides of the agreed defence policy
	relay      stages.DatagramRelay // client: relay for UDP associations (nil: none)
	rekeyAfter uint64               // records under one key (0: default)
	drain      <-chan struct{}      // client: closed to rotate away from this backend
	log        *logrus.Entry
	stats      *stages.Stats
	mem        *stages.MemBudget      // receive memory of this session (nil: unbounded)
	ended      func(stages.StreamEnd) // called as each stream ends (access log)
	capture    *capture.Session       // nil: capture off (nil taps)
}

// newV1Keys sets up both directions of a v1 record channel.
func newV1Keys(key string) (*v1Keys, error) {
	k := v1.DeriveKey(key)
	s, err := v1.NewRandomSealer(k, rand.Reader)
	if err != nil {
		return nil, err
	}
	return &v1Keys{seal: s, open: v1.NewOpener(k)}, nil
}

// needsReset says whether a session error is worth a RESET record.
func needsReset(legacy bool, err error) bool {
	if legacy {
		return v1.NeedsReset(err)
	}
	return errors.Is(err, wire.ErrAuth) || errors.Is(err, stages.ErrProtocol) || errors.Is(err, stages.ErrTruncated)
}

// runSession runs the pipeline on an established backend until it ends.
// It returns nil for a clean close (either side), an error otherwise.
func runSession(ctx context.Context, p sessionParams) error {
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	g, gctx := errgroup.WithContext(hard)
	legacy := p.v1 != nil

	chunks := make(chan stages.Chunk, stages.ChunkQueueLen)
	frames := make(chan stages.Frame, stages.FrameQueueLen)
	data := make(chan stages.Frame, stages.DataQueueLen)
	control := make(chan stages.Frame, stages.ControlQueueLen)
	batches := make(chan stages.Batch, stages.BatchQueueLen)
	shaped := batches // encrypt's input: the mux's batches, or the defence stage's
	sealed := make(chan stages.Sealed, stages.BatchQueueLen)

	var mu sync.Mutex
	var result error
	failed, graceExpired := false, false
	final, finalOK := wire.FrameClose, true
	// linger says whether the socket ends with FIN and a bounded drain
	// (stages.LingerClose), so that the last record arrives: a clean end
	// or a failure with the peer still there. A dead backend, or a peer
	// that let the grace time pass, is cut at once.
	linger := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !graceExpired && !backendGone(result)
	}

	// closing starts the end of the session: ours (ctx), the peer's CLOSE,
	// or a failure.
	closing := make(chan struct{})
	var closeOnce sync.Once
	startClose := func() {
		closeOnce.Do(func() {
			close(closing)
			time.AfterFunc(GraceTimeout, func() {
				mu.Lock()
				graceExpired = true
				mu.Unlock()
				cancelHard()
			})
		})
	}
	fail := func(err error) {
		mu.Lock()
		if !failed {
			failed, result = true, err
			final, finalOK = wire.FrameReset, needsReset(legacy, err)
		}
		mu.Unlock()
		startClose()
	}
	stopCtx := context.AfterFunc(ctx, startClose)
	defer stopCtx()
	// A deadline (or, for a dead backend, closing the socket) is what
	// unblocks the reader and writer at the end. Closing with unread input
	// would make the kernel send RST and destroy a last record in flight.
	stopConn := context.AfterFunc(gctx, func() {
		if linger() {
			_ = p.conn.SetDeadline(time.Now().Add(stages.LingerTimeout))
		} else {
			_ = p.conn.Close()
		}
	})
	defer stopConn()

	log := p.log
	stage := func(name string) *logrus.Entry {
		return log.WithFields(logrus.Fields{"layer": stageLayers[name], "stage": name})
	}
	var enc, dec, defence func(context.Context) error
	var recycle func(stages.Sealed)
	if legacy {
		e := &stages.EncryptV1{Sealer: p.v1.seal, Rand: rand.Reader, In: batches, Out: sealed, Log: stage("encrypt")}
		d := &stages.DecryptV1{Opener: p.v1.open, In: chunks, Out: frames, Log: stage("decrypt")}
		if p.capture != nil {
			e.Tap, d.Tap = p.capture.FrameOut, p.capture.FrameIn
		}
		enc, dec = e.Run, d.Run
	} else {
		p.stats.DefencePolicy.Store(int32(p.keys.Defence))
		var decEvents *stages.DefenceEvents
		cell := 0
		if params := p.tuning.apply(p.keys.Defence, p.role); params != nil {
			shaped = make(chan stages.Batch, stages.BatchQueueLen)
			var seed [32]byte
			_, _ = rand.Read(seed[:])
			decEvents = stages.NewDefenceEvents()
			def := &stages.Defence{Params: params, In: batches, Out: shaped, Events: decEvents,
				Rand: mrand.New(mrand.NewChaCha8(seed)), Stats: p.stats, Log: stage("defence")}
			defence, cell = def.Run, params.Cell
		}
		// The keys stay inside the Sealer and Opener (package wire), which
		// rekey themselves; the stages own those.
		e := &stages.Encrypt{Sealer: p.keys.Seal, Cell: cell, In: shaped, Out: sealed, Log: stage("encrypt"),
			Rekey: &stages.Rekeyer{After: p.rekeyAfter, Rand: rand.Reader, Counter: &p.stats.Rekeys}}
		d := &stages.Decrypt{Opener: p.keys.Open, In: chunks, Out: frames, Log: stage("decrypt"),
			Chaff: func() { p.stats.ChaffReceived.Add(1) }, Events: decEvents}
		if p.capture != nil {
			p.capture.TapEncrypt(e)
			d.Tap = p.capture.FrameIn
		}
		enc, dec, recycle = e.Run, d.Run, e.Recycle
	}
	rd := &stages.BackendReader{Conn: p.conn, Out: chunks, Log: stage("backend-reader")}
	wr := &stages.BackendWriter{Conn: p.conn, In: sealed, Log: stage("backend-writer"), Release: recycle}
	readRun, writeRun := rd.Run, wr.Run
	if p.capture != nil {
		readRun, writeRun = p.capture.TapBackend(rd, wr)
	}
	// The peer's CLOSE ends the session. A v2 peer waits for ours; the
	// original v1 closes its socket right after its close record, so a
	// close of ours would only meet a reset socket and turn a clean end
	// into a failure.
	peerClosing := startClose
	if legacy {
		peerClosing = func() {
			mu.Lock()
			if !failed {
				finalOK = false
			}
			mu.Unlock()
			startClose()
		}
	}
	mux := &stages.Mux{Control: control, Data: data, Out: batches, Shutdown: closing, Log: stage("mux"),
		Final: func() (wire.FrameType, bool) { mu.Lock(); defer mu.Unlock(); return final, finalOK }}
	dmx := &stages.Demux{
		Role: p.role, In: frames, Data: data, Control: control,
		Accept: p.accept, Frontend: p.frontend, MaxStreams: p.maxStreams, Legacy: legacy,
		IdleTimeout: max(p.idle, 0), HalfClosedTimeout: max(p.half, 0), KeepAlive: p.keepalive, Relay: p.relay, Memory: p.mem,
		Closing: closing, PeerClosing: peerClosing, Drain: p.drain, Drained: startClose, Log: stage("demux"), Stats: p.stats,
		Ended: p.ended,
	}

	run := func(name string, f func(context.Context) error, io bool) {
		g.Go(func() (err error) {
			slog := stage(name)
			defer func() {
				if r := recover(); r != nil {
					slog.WithField("panic", r).Error("stage panicked\n" + string(debug.Stack()))
					err = fmt.Errorf("stage %s panicked: %v", name, r)
				}
				if err != nil {
					fail(err)
				}
				mu.Lock()
				cut := failed
				mu.Unlock()
				if cut && io {
					// Nothing more can usefully cross the backend.
					cancelHard()
				}
				err = nil
			}()
			slog.Debug("stage started")
			defer slog.Debug("stage stopped")
			err = f(gctx)
			if errors.Is(err, stages.ErrPeerClosed) || (err != nil && gctx.Err() != nil) {
				return nil // a clean end, or the cut after one
			}
			return err
		})
	}
	if defence != nil {
		run("defence", defence, false)
	}
	run("backend-reader", readRun, true)
	run("decrypt", dec, false)
	run("demux", dmx.Run, false)
	run("mux", mux.Run, false)
	run("encrypt", enc, false)
	run("backend-writer", writeRun, true)
	_ = g.Wait()
	if linger() {
		stages.LingerClose(p.conn, stages.LingerTimeout)
	} else {
		_ = p.conn.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	p.capture.End(result)
	return result
}

// backendGone says whether a session error means that nothing more can
// reach the peer (socket error, keepalive timeout).
func backendGone(err error) bool {
	var be *stages.BackendError
	return errors.As(err, &be) || errors.Is(err, stages.ErrPeerDead)
}

// stageLayers is the layer of each stage of a session, for the "layer"
// log field (the frontends log as "frontend").
var stageLayers = map[string]string{
	"backend-reader": "backend", "backend-writer": "backend",
	"decrypt": "record", "encrypt": "record", "defence": "record",
	"demux": "tunnel", "mux": "tunnel",
}
