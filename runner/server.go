package runner

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/runner/capture"
	"usocks/stages"
	"usocks/wire"
)

// Server is a usocks server: it accepts backends, authenticates each with
// the v2 handshake and runs one session per backend. One bad client never
// disturbs another: each session has its own goroutines, keys and limits.
type Server struct {
	live atomic.Pointer[ServerConfig] // the config in force (a reload replaces it)
	psk  *wire.PSK
	log  *logrus.Entry
	hs   atomic.Pointer[stages.ServerHandshake] // replaced by a reload
	fe   *stages.LiveFrontend

	// Stats counts streams of all sessions.
	Stats stages.Stats
	// Rejected counts connections that got the invalid-input reaction;
	// Sessions those that completed the handshake (but lanes joining a
	// session, SPEC-v2.md §7d); Clean and Failed how
	// sessions ended.
	Rejected, Sessions, Clean, Failed Counter
	// StoreDown counts handshakes refused because the replay store could
	// not answer (unreachable shared store, or unsaved state).
	StoreDown Counter

	ln net.Listener
	// waiting holds connections not authenticated yet (max_pending).
	waiting *waiting
	lanes   *stages.LaneGrouper // v1 multi_tcp
	tls     *tls.Config         // tls backend
	cert    *certSource         // tls backend: its certificate
	// sessions are the running sessions by user (multi-user servers).
	sessions *userSessions
	// reloading serialises reloads; baseLevel is the log level a config
	// without log_level goes back to.
	reloading sync.Mutex
	baseLevel logrus.Level
	site      interface{ Serve(net.Conn, []byte) } // tls and ws backends: the web site for visitors
	capture   *capture.Writer                      // nil unless cfg.Capture is set
	replay    *replay                              // v2: salt store and users
	limits    *limiter                             // per-session, per-user and total bounds
	drain     *drainer                             // graceful stop (drain.go); set by Run
	metrics   *metrics                             // nil unless cfg.Metrics is set
	resumes   *resumables                          // v2 with resume_timeout: detached sessions
	// resendKept sums the bytes of the sessions' resend buffers.
	resendKept atomic.Int64
	names      atomic.Pointer[map[wire.UserID]string]
}

// Counter is a concurrency-safe counter.
type Counter struct {
	mu sync.Mutex
	n  int64
}

// Add adds one.
func (c *Counter) Add() { c.mu.Lock(); c.n++; c.mu.Unlock() }

// Load reads the count.
func (c *Counter) Load() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// NewServer checks the config and prepares a server.
func NewServer(cfg *ServerConfig, logger *logrus.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{log: logger.WithField("side", "server"), waiting: newWaiting(cfg.MaxPending), sessions: newUserSessions()}
	s.live.Store(cfg)
	s.baseLevel = logger.GetLevel()
	setLogLevel(logger, cfg.LogLevel, s.baseLevel)
	fds := newFDGuard(serverFDs(s.log, cfg.MaxPending, cfg.MaxSessions), cfg.MaxPending)
	s.limits = newLimiter(cfg.Limits, len(cfg.Clients) > 0, fds)
	if cfg.resumes() && cfg.Protocol != "v1" {
		s.resumes = newResumables(cfg.MaxDetached, cfg.ResumeTimeout, s.log)
	}
	s.metrics = newServerMetrics(s) // after resumes: it exposes its counters
	fe, err := newFrontend(cfg, s.log)
	if err != nil {
		return nil, err
	}
	s.fe = stages.NewLiveFrontend(fe)
	if cfg.Protocol == "v1" {
		s.log.Warn(v1Warning)
		s.lanes = &stages.LaneGrouper{Number: cfg.Backend.Number, Timeout: 10 * time.Second}
		return s, nil
	}
	psk, err := cfg.PSK("server")
	if err != nil {
		return nil, err
	}
	warnDamagedKey(s.log, "server.key", cfg.Key)
	s.psk = psk
	if cfg.Backend.Type == "tls" {
		if s.tls, s.cert, err = serverTLS(&cfg.Backend); err != nil {
			return nil, err
		}
	}
	if s.tls != nil || cfg.Backend.Type == "ws" {
		if s.site, err = webSite(&cfg.Backend); err != nil {
			return nil, err
		}
	}
	var ciphers []wire.CipherID
	if cfg.Cipher != "" && cfg.Cipher != "auto" {
		c, _ := wire.ParseCipher(cfg.Cipher)
		ciphers = []wire.CipherID{c}
	}
	probe := cfg.ProbeTimeout
	var rb [8]byte
	if _, err := io.ReadFull(rand.Reader, rb[:]); err != nil {
		return nil, err
	}
	if probe == 0 {
		// Fixed per server, random across servers (as obfs4 does).
		probe = 30*time.Second + time.Duration(binary.LittleEndian.Uint64(rb[:8])%uint64(60*time.Second))
	}
	if s.replay, err = newReplay(cfg, s.log); err != nil {
		return nil, err
	}
	s.hs.Store(&stages.ServerHandshake{
		PSK: psk, Ciphers: ciphers, Rand: rand.Reader, Now: time.Now, Skew: cfg.ReplayWindow,
		Salts: s.replay.store(), Users: s.replay.users,
		DrainTimeout: probe, Log: s.log, Prefix: []byte(cfg.Backend.Prefix),
		DefenceCap: cfg.defencePolicy(), Resume: s.resumeHook(),
	})
	return s, nil
}

// Listen binds the backend listener. Run calls it if it was not called.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg().ListenAddr())
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", s.cfg().ListenAddr(), err)
	}
	s.ln = ln
	return nil
}

// UseListener makes Server serve on an already bound listener (tests, demo).
func (s *Server) UseListener(ln net.Listener) { s.ln = ln }

// Addr is the backend listener's address (after Listen).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Handshake exposes the handshake settings (tests adjust the clock).
func (s *Server) Handshake() *stages.ServerHandshake { return s.hs.Load() }

// cfg is the config in force.
func (s *Server) cfg() *ServerConfig { return s.live.Load() }

// Run serves until ctx is done, then closes every session gracefully and
// returns when all have ended.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.observeUsers()
	started := logrus.Fields{"listen": s.ln.Addr().String(), "frontend": s.cfg().Frontend.Type, "target": s.cfg().TargetAddr()}
	if s.psk != nil {
		started["key"] = KeyFingerprint(s.psk)
	}
	if n := len(s.cfg().Clients); n > 0 {
		started["users"] = n
	}
	if s.cert != nil {
		started["tls_pin"] = s.cert.pin() // what a client's backend.tls_pin names
	}
	s.log.WithFields(started).Info("server started")
	stopMetrics, err := serveMetrics(ctx, s.metrics, s.cfg().Metrics, s.log)
	if err != nil {
		_ = s.ln.Close()
		return err
	}
	defer stopMetrics()
	defer startMemTrim()() // memory back to the OS after bursts (memtrim.go)
	if s.cfg().Capture != "" {
		cp, err := capture.Open(s.cfg().Capture, s.cfg().Protocol, "server", s.cfg().CapturePlaintext, s.cfg().CaptureMaxMiB<<20)
		if err != nil {
			_ = s.ln.Close()
			return err
		}
		s.capture = cp
		if hs := s.hs.Load(); hs != nil {
			hs.KeyLog = capture.ServerKeyLog // before any handshake; a reload copies it
		}
		defer func() { // after every session has ended
			if err := cp.Close(); err != nil {
				s.log.WithError(err).Warn("capture file incomplete")
			}
		}()
		s.log.WithFields(logrus.Fields{"file": s.cfg().Capture, "plaintext": s.cfg().CapturePlaintext}).Warn("capturing every session to a file")
	}
	if s.replay != nil {
		rctx, rcancel := context.WithCancel(ctx)
		stopReplay, err := s.replay.start(rctx)
		if err != nil {
			rcancel()
			_ = s.ln.Close()
			return err
		}
		defer func() { rcancel(); stopReplay() }() // after every handshake and session has ended
	}
	stop := context.AfterFunc(ctx, func() { _ = s.ln.Close() })
	defer stop()
	// Sessions outlive ctx by up to drain_timeout (drain.go).
	s.drain = newDrainer()
	defer s.drain.release()
	stopDrain := context.AfterFunc(ctx, func() { s.drain.start(*s.cfg().DrainTimeout, s.log) })
	defer stopDrain()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				s.log.Info("server stopping")
				if s.lanes != nil {
					s.lanes.CloseAll()
				}
				return nil
			}
			s.log.WithError(err).Warn("accept failed")
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		accepted := time.Now()
		if s.lanes != nil && s.cfg().Backend.Type == "multi_tcp" {
			// Lanes are numbered in accept order: group them here, in the
			// accept loop, not in goroutines that may run in any order.
			lanes := s.lanes.Add(conn)
			if lanes == nil {
				continue
			}
			sc, err := stages.NewStripedConn(lanes, s.cfg().Backend.Blocksize)
			if err != nil {
				for _, l := range lanes {
					_ = l.Close()
				}
				continue
			}
			conn = sc
		}
		// Every connection is read at once: a full pool ends its oldest
		// waiting connection early rather than refuse this one.
		wctx, done := s.waiting.add(ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done()
			s.serve(ctx, wctx, done, conn, accepted)
		}()
	}
}

// Evicted counts connections ended early because max_pending connections
// were waiting to authenticate.
func (s *Server) Evicted() int64 { return s.waiting.evicted.Load() }

// serve runs one connection: wctx is its context while it waits to
// authenticate (cancelled on eviction), done takes it out of the pool.
func (s *Server) serve(ctx, wctx context.Context, done func(), conn net.Conn, accepted time.Time) {
	if s.cfg().Protocol == "v1" {
		done()
		s.serveV1(ctx, conn)
		return
	}
	log := s.log.WithField("peer", conn.RemoteAddr().String())
	sc := s.capture.Session(conn.RemoteAddr().String())
	raw := conn
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })
	var pc *stages.PrefixConn
	if s.tls != nil || s.cfg().Backend.Type == "ws" {
		var visit func()
		if conn, pc, visit = s.acceptWrapped(wctx, conn, accepted); conn == nil {
			if visit != nil {
				s.Rejected.Add()
				log.Info("visitor served by the web site")
				visit()
			}
			stop()
			sc.End(fmt.Errorf("not a usocks client"))
			return
		}
	}
	hc := sc.HandshakeConn(conn)
	hs := s.hs.Load() // a reload changes the handshakes that start after it
	keys, err := hs.Handshake(wctx, hc, accepted)
	if errors.Is(err, stages.ErrStoreDown) {
		s.StoreDown.Add()
	}
	if err != nil && pc != nil {
		// Inside TLS, anything that is not a usocks client meets a web
		// server, not silence.
		s.Rejected.Add()
		log.WithField("reason", err.Error()).Warn("invalid handshake inside tls: web site")
		s.metrics.handshakeFailed(err.Error())
		s.site.Serve(pc.Conn, pc.Seen())
		stop()
		sc.End(fmt.Errorf("handshake: %w", err))
		return
	}
	if pc != nil {
		pc.Record = nil // the session reads on; stop keeping a copy
	}
	if err == nil {
		done() // authenticated: no longer waiting
	}
	if err != nil {
		s.Rejected.Add()
		log.WithField("reason", err.Error()).Warn("invalid handshake")
		s.metrics.handshakeFailed(err.Error())
		// The same reaction under any load: drain until the deadline
		// (sooner only if evicted from a full pool), then FIN.
		hs.Reject(wctx, hc, accepted)
		stop()
		_ = conn.Close()
		sc.End(fmt.Errorf("handshake: %w", err))
		return
	}
	stop()
	if ctx.Err() != nil {
		if keys.Resume != nil {
			s.resumes.Abort(keys.Resume)
		}
		_ = conn.Close()
		sc.End(ctx.Err())
		return
	}
	if keys.Resume == nil || keys.Resume.Reply.Status != wire.ResumeOK || keys.Resume.Reply.Lanes == 0 {
		s.Sessions.Add() // a lane joining its session is not one (SPEC-v2.md §7d)
	}
	if name := s.userName(keys.User); name != "" {
		log = log.WithField("user", name)
	}
	f := logrus.Fields{"cipher": keys.Cipher.String(), "defense": keys.Defence.String()}
	if keys.Resume != nil {
		f["resume"] = keys.Resume.Reply.Status.String()
	}
	if keys.Resume != nil && keys.Resume.Reply.Status == wire.ResumeOK {
		log.WithFields(f).Info("session resumed on a new backend")
		lk := &link{conn: conn, keys: keys, peerRecv: keys.Resume.Offer.Received, capture: sc}
		if !s.resumes.hand(keys.Resume.Claim.(*resumeSlot), lk) {
			_ = conn.Close()
			sc.End(errResumeEnded)
		}
		return
	}
	p := sessionParams{conn: conn, keys: keys, capture: sc}
	if keys.Resume != nil {
		var slot *resumeSlot
		defer func() {
			if slot != nil {
				s.resumes.remove(slot)
			}
		}()
		key := resumeKey{keys.User, keys.Resume.Offer.ID}
		p.resume = &resumeParams{id: key.id, buffer: s.cfg().ResumeBuffer << 10, kept: &s.resendKept,
			lanes: int(keys.Resume.Reply.Lanes),
			started: func(sess *session) {
				if slot = s.resumes.register(key, sess); slot != nil && sess.ls != nil {
					sess.ls.attach = slot.attach
				}
			},
			next: func(sess *session, lost error) *link {
				if slot == nil {
					return nil
				}
				return s.resumes.awaitLink(slot, lost)
			}}
	}
	// The server's stop drains the session (drain.go); a reload that
	// removes this user ends it (gracefully).
	ctx, release := s.drain.detach(ctx)
	defer release()
	ctx, untrack := s.sessions.track(ctx, keys.User, s.replay.users)
	defer untrack()
	s.runSession(ctx, log, p, keys.User, f)
}

// resumeHook is the handshake's hook for resumable sessions (nil: off).
func (s *Server) resumeHook() stages.ResumeHook {
	if s.resumes == nil {
		return nil
	}
	return s.resumes
}

// refusing is the frontend of a refused session.
type refusing struct{ err error }

func (r refusing) Open(context.Context, stages.StreamIO) (net.Conn, error) { return nil, r.err }

// serveV1 runs a v1 tunnel on a plain_tcp connection or a complete
// multi_tcp group.
func (s *Server) serveV1(ctx context.Context, conn net.Conn) {
	log := s.log.WithField("peer", conn.RemoteAddr().String())
	keys, err := newV1Keys(s.cfg().Key) // the key in force when the session starts
	if err != nil {
		_ = conn.Close()
		log.WithError(err).Error("v1 session setup failed")
		return
	}
	s.Sessions.Add()
	ctx, release := s.drain.detach(ctx)
	defer release()
	s.runSession(ctx, log, sessionParams{conn: conn, v1: keys, capture: s.capture.Session(conn.RemoteAddr().String())},
		wire.UserID{}, logrus.Fields{"protocol": "v1"})
}

// runSession runs an authenticated session of user within the limits; a
// session past them is refused: it ends at once with a clean CLOSE.
func (s *Server) runSession(ctx context.Context, log *logrus.Entry, p sessionParams, user wire.UserID, fields logrus.Fields) {
	cfg := s.cfg() // a reload changes the sessions that start after it
	p.role, p.maxStreams = stages.Server, cfg.MaxStreams
	p.idle, p.half = cfg.IdleTimeout, cfg.HalfClosedTimeout
	p.keepalive = max(cfg.KeepAlive, 0) // every v2 peer answers pings
	p.rekeyAfter, p.tuning = cfg.RekeyAfter, cfg.DefenseTuning
	p.log, p.stats = log.WithField("layer", "session"), &s.Stats
	access := accessLog(log, stages.Server, s.countStream)
	sl, err := s.limits.open(user, p.log)
	if err != nil {
		log.WithError(err).Warn("session refused by a limit")
		p.frontend, p.ended = refusing{err}, access
		cctx, cancel := context.WithCancel(ctx)
		cancel() // the session says CLOSE and ends
		_ = runSession(cctx, p)
		return
	}
	defer sl.close()
	log.WithFields(fields).Info("session established")
	// The server's stop refuses new streams and closes the session once
	// its last one has ended (drain.go).
	sd := newSessionDrain()
	p.frontend, p.mem = sd.frontend(sl.frontend(s.drain.frontend(s.fe))), sl.mem
	p.ended = func(e stages.StreamEnd) { sd.ended(); sl.ended(e.ID); access(e) }
	ctx, closeSession := context.WithCancel(ctx)
	defer closeSession()
	ended, watched := make(chan struct{}), make(chan struct{})
	go func() { defer close(watched); sd.watch(s.drain.started(), closeSession, ended) }()
	defer func() { close(ended); <-watched }()
	err = runSession(ctx, p)
	if err != nil {
		s.Failed.Add()
		log.WithError(err).Warn("session ended")
	} else {
		s.Clean.Add()
		log.Info("session closed")
	}
}
