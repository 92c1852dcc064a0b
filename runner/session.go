package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"usocks/stages"
)

// A session is the unit of restart: every stage that shares one backend
// connection and one key state runs in one errgroup. When any stage fails
// the group cancels the rest and the session ends; the client then builds
// a new session (new connection, new keys, new channels). Streams are
// reset, never carried over.
//
//	backend reader ─► decrypt ─► demux ─► stream actors ─► local sockets
//	backend writer ◄─ encrypt ◄─ mux ◄──── stream actors ◄─ local sockets

// GraceTimeout bounds a graceful close: after sending CLOSE, how long the
// session waits for the peer's CLOSE and EOF before it is cut.
const GraceTimeout = 3 * time.Second

// sessionParams is everything one session needs.
type sessionParams struct {
	role       stages.Role
	conn       net.Conn
	keys       *stages.Keys
	accept     <-chan net.Conn // client: new local connections
	frontend   stages.Frontend // server
	maxStreams int
	log        *logrus.Entry
	stats      *stages.Stats
}

// runSession runs the v2 pipeline on an established backend until it ends.
// When ctx is done the session closes gracefully: it stops taking streams,
// sends CLOSE, and waits up to GraceTimeout for the peer to do the same.
// It returns nil for a clean close (either side), an error otherwise.
func runSession(ctx context.Context, p sessionParams) error {
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	g, gctx := errgroup.WithContext(hard)

	chunks := make(chan stages.Chunk, stages.ChunkQueueLen)
	frames := make(chan stages.Frame, stages.FrameQueueLen)
	data := make(chan stages.Frame, stages.DataQueueLen)
	control := make(chan stages.Frame, stages.ControlQueueLen)
	batches := make(chan stages.Batch, stages.BatchQueueLen)
	sealed := make(chan stages.Sealed, stages.BatchQueueLen)

	// closing starts the graceful close: ours (ctx) or the peer's CLOSE.
	closing := make(chan struct{})
	var closeOnce sync.Once
	startClose := func() {
		closeOnce.Do(func() {
			close(closing)
			time.AfterFunc(GraceTimeout, cancelHard)
		})
	}
	stopCtx := context.AfterFunc(ctx, startClose)
	defer stopCtx()
	// Cutting the socket is what unblocks the reader and writer.
	stopConn := context.AfterFunc(gctx, func() { _ = p.conn.Close() })
	defer stopConn()

	log := p.log
	stage := func(name string) *logrus.Entry { return log.WithField("stage", name) }
	enc := &stages.Encrypt{Sealer: p.keys.Seal, In: batches, Out: sealed, Log: stage("encrypt")}
	dec := &stages.Decrypt{Opener: p.keys.Open, In: chunks, Out: frames, Log: stage("decrypt"),
		Chaff: func() { p.stats.ChaffReceived.Add(1) }}
	rd := &stages.BackendReader{Conn: p.conn, Out: chunks, Log: stage("backend-reader")}
	wr := &stages.BackendWriter{Conn: p.conn, In: sealed, Log: stage("backend-writer"), Release: enc.Recycle}
	mux := &stages.Mux{Control: control, Data: data, Out: batches, Shutdown: closing, Log: stage("mux")}
	dmx := &stages.Demux{
		Role: p.role, In: frames, Data: data, Control: control,
		Accept: p.accept, Frontend: p.frontend, MaxStreams: p.maxStreams,
		Closing: closing, PeerClosing: startClose, Log: stage("demux"), Stats: p.stats,
	}

	var result error
	var resultOnce sync.Once
	setResult := func(err error) { resultOnce.Do(func() { result = err }) }
	run := func(name string, f func(context.Context) error) {
		g.Go(func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					log.WithField("stage", name).WithField("panic", r).Error("stage panicked\n" + string(debug.Stack()))
					err = fmt.Errorf("stage %s panicked: %v", name, r)
				}
				if err != nil {
					setResult(err)
				}
			}()
			log.WithField("stage", name).Debug("stage started")
			defer log.WithField("stage", name).Debug("stage stopped")
			err = f(gctx)
			if errors.Is(err, stages.ErrPeerClosed) {
				// A clean end: let the writer flush our own CLOSE.
				setResult(nil)
				return nil
			}
			return err
		})
	}
	run("backend-reader", rd.Run)
	run("decrypt", dec.Run)
	run("demux", dmx.Run)
	run("mux", mux.Run)
	run("encrypt", enc.Run)
	run("backend-writer", wr.Run)
	err := g.Wait()
	_ = p.conn.Close()
	if result != nil {
		err = result
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// We were asked to stop and the grace period ran out.
		return nil
	}
	return err
}
