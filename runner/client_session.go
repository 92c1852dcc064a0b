package runner

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/runner/capture"
	"usocks/stages"
	"usocks/wire"
)

// established is a backend connection whose handshake is done.
type established struct {
	conn net.Conn
	srv  int // index in c.servers
	keys *stages.Keys
	v1   *v1Keys        // protocol v1 (keys is nil)
	id   wire.SessionID // the session id offered (v2 with resumption)
	sc   *capture.Session
}

// Errors that end a resumable session on the client.
var (
	// ErrResumeRefused: the server did not resume the session (it had
	// expired, or the server restarted); its streams are reset.
	ErrResumeRefused = errors.New("server did not resume the session")
	// ErrResumeTimeout: no new backend within resume_timeout.
	ErrResumeTimeout = errors.New("no backend to resume the session within resume_timeout")
)

// session dials (or takes the connection a refused resumption left),
// handshakes and runs one session. Rotation (SPEC-v2.md §6b): a resumable
// session replaces its links itself (rotate.go); any other session closes
// drain after rotate_after, which moves it to draining (see
// stages.Demux.Drain) and makes Run open the next session.
func (c *Client) session(ctx context.Context, drain chan struct{}) error {
	est := c.carry.Swap(nil)
	if est == nil {
		var id wire.SessionID
		if _, err := io.ReadFull(rand.Reader, id[:]); err != nil {
			return err
		}
		var err error
		if est, err = c.connect(ctx, -1, id, 0); err != nil {
			return err
		}
		if r := est.keys; r != nil && r.Resume != nil && r.Resume.Reply.Status != wire.ResumeNew {
			// A fresh id must start a new session (SPEC-v2.md §7b).
			_ = est.conn.Close()
			return fmt.Errorf("handshake: %w: server resumed a session the client never had", stages.ErrServerAuth)
		}
	}
	conn, srv := est.conn, est.srv
	// A session that ends while the client runs (dead backend, server
	// gone) sends the next one to another server first.
	defer func() {
		if ctx.Err() == nil {
			c.servers.failed(srv)
		}
	}()
	cfg := c.cfg() // a reload changes the sessions that start after it
	log := c.log.WithField("peer", conn.RemoteAddr().String())
	params := sessionParams{
		role: stages.Client, conn: conn, accept: c.accepted,
		maxStreams: cfg.MaxStreams, log: log.WithField("layer", "session"), stats: &c.Stats,
		idle: cfg.IdleTimeout, half: cfg.HalfClosedTimeout, keepalive: max(cfg.KeepAlive, 0),
		drain: drain, rekeyAfter: cfg.RekeyAfter, tuning: cfg.DefenseTuning,
		capture: est.sc,
		ended:   accessLog(log, stages.Client, c.metrics.stream),
	}
	if c.udp != nil {
		params.relay = c.udp
	}
	c.servers.ok(srv)
	select {
	case c.Sessions <- struct{}{}:
	default:
	}
	if cfg.Protocol == "v1" {
		params.v1 = est.v1
	} else {
		params.keys = est.keys
	}
	if est.keys != nil && est.keys.Resume != nil {
		id := est.id
		params.resume = &resumeParams{id: id, buffer: cfg.ResumeBuffer << 10, kept: &c.resendKept,
			next:  func(s *session, lost error) *link { return c.resume(ctx, s, srv, id, lost) },
			lanes: int(est.keys.Resume.Reply.Lanes)}
		params.rotate = &rotateParams{after: cfg.RotateAfter, bytes: cfg.RotateBytes, rotated: func(pause time.Duration) {
			c.Rotations.Add(1)
			c.RotationPause.Add(int64(pause))
		}}
	} else if cfg.RotateAfter > 0 {
		t := time.AfterFunc(jittered(cfg.RotateAfter), func() { close(drain) })
		defer t.Stop()
	}
	return runSession(ctx, params)
}

// connect dials (server srv, or any when srv < 0) and handshakes,
// offering to resume session id at received frames when resumption is on.
// Every connection is captured (capture on): a session's first one, and
// each link that resumes it (tagged with a link event).
func (c *Client) connect(ctx context.Context, srv int, id wire.SessionID, received uint64) (*established, error) {
	var conn net.Conn
	var err error
	if srv < 0 {
		conn, srv, err = c.dialAny(ctx)
	} else {
		conn, err = c.dialBackend(ctx, c.servers.servers[srv])
	}
	if err != nil {
		return nil, err
	}
	live := c.live.Load()
	cfg := live.cfg
	est := &established{conn: conn, srv: srv, id: id, sc: c.capture.Session(conn.RemoteAddr().String())}
	log := c.log.WithField("peer", conn.RemoteAddr().String())
	if cfg.Protocol == "v1" {
		// v1 has no handshake: the record channel starts at once.
		k, err := newV1Keys(cfg.Key)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		log.Info("session started (protocol v1)")
		est.v1 = k
		return est, nil
	}
	hs := &stages.ClientHandshake{PSK: live.psk, Cipher: live.cipher, Rand: c.Rand, Now: c.Now, Skew: cfg.ReplayWindow, Timeout: 10 * time.Second, Prefix: []byte(cfg.Backend.Prefix), Identity: live.identity,
		PostQuantum: cfg.PostQuantum == nil || *cfg.PostQuantum,
		Defence:     cfg.defencePolicy()}
	if cfg.resumes() {
		hs.Resume = &wire.ClientResume{ID: id, Received: received, Lanes: uint8(cfg.lanes())}
	}
	if est.sc != nil {
		hs.KeyLog = func(_ net.Conn, k *wire.SessionKeys, ci wire.CipherID) { est.sc.KeyLog(k, ci) }
	}
	keys, err := hs.Run(ctx, est.sc.HandshakeConn(conn))
	if err != nil {
		_ = conn.Close()
		est.sc.End(fmt.Errorf("handshake: %w", err))
		return nil, fmt.Errorf("handshake: %w", err)
	}
	est.keys = keys
	f := logrus.Fields{"cipher": keys.Cipher.String(), "defense": keys.Defence.String()}
	if keys.Resume != nil {
		f["resume"] = keys.Resume.Reply.Status.String()
	}
	log.WithFields(f).Info("session established")
	return est, nil
}
