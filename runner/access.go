package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
)

// KeyFingerprint names a key in logs and reports without revealing it:
// the first 8 bytes of a domain-separated SHA-256, in hex. Both sides of
// a tunnel log it at start, so a mismatched key shows at a glance.
func KeyFingerprint(psk *wire.PSK) string {
	h := sha256.New()
	h.Write([]byte("usocks key fingerprint\x00"))
	h.Write(psk[:])
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// accessLog returns the Demux.Ended hook of one session: one info line
// per stream when it ends, the same numbers on both sides. up is the
// bytes that went toward the target (the app's upload), down those that
// came back; on a server the local side is the target, on a client the app.
func accessLog(log *logrus.Entry, role stages.Role, count func(user string, e stages.StreamEnd, up, down int64)) func(stages.StreamEnd) {
	user, _ := log.Data["user"].(string)
	return func(e stages.StreamEnd) {
		up, down, peer := e.Up, e.Down, "app"
		if role == stages.Server {
			up, down, peer = e.Down, e.Up, "target"
		}
		if count != nil {
			count(user, e, up, down)
		}
		if !log.Logger.IsLevelEnabled(logrus.InfoLevel) {
			return // the fields cost a stream a dozen allocations
		}
		f := logrus.Fields{"stream": e.ID, "up": up, "down": down,
			"duration": e.Duration.Round(time.Millisecond).String(), "end": e.How}
		if e.Peer != "" {
			f[peer] = e.Peer
		}
		if e.Err != nil {
			f["error"] = e.Err.Error()
		}
		log.WithFields(f).Info("stream ended")
	}
}

// userNames maps the ids of the config's client keys to their names (for
// logs and metrics); parsed holds keys already parsed by their text.
func userNames(clients map[string]string, parsed map[string]*wire.PSK) map[wire.UserID]string {
	names := make(map[wire.UserID]string, len(clients))
	for name, k := range clients {
		if psk := parsed[k]; psk != nil {
			names[wire.UserIDOf(psk)] = name
		}
	}
	return names
}

// userName is the config name of a multi-user client ("" if none).
func (s *Server) userName(id wire.UserID) string {
	if m := s.names.Load(); m != nil {
		return (*m)[id]
	}
	return ""
}

// countStream counts an ended stream in the metrics.
func (s *Server) countStream(user string, e stages.StreamEnd, up, down int64) {
	s.metrics.stream(user, e, up, down)
}

// observeUsers names the users of a multi-user server for logs.
func (s *Server) observeUsers() {
	if s.replay != nil {
		names := s.replay.names()
		s.names.Store(&names)
	}
}

// resumptionsName counts resumptions by outcome, on both sides.
const resumptionsName = "usocks_resumptions_total"

// newServerMetrics is the server's metrics registry (nil if not configured).
func newServerMetrics(s *Server) *metrics {
	if s.cfg().Metrics == "" {
		return nil
	}
	m := newMetrics("server")
	m.stats(&s.Stats, "server")
	for _, c := range []struct {
		name, help string
		n          *Counter
	}{
		{"usocks_sessions_total", "Sessions established.", &s.Sessions},
		{"usocks_sessions_clean_total", "Sessions that ended cleanly.", &s.Clean},
		{"usocks_sessions_failed_total", "Sessions that ended with an error.", &s.Failed},
		{"usocks_connections_rejected_total", "Connections that got the invalid-input reaction or the decoy.", &s.Rejected},
		{"usocks_handshakes_store_down_total", "Handshakes refused because the replay store could not answer.", &s.StoreDown},
		{"usocks_limit_sessions_refused_total", "Sessions refused by max_sessions or max_sessions_per_user.", &s.limits.Refused.Sessions},
		{"usocks_limit_dials_refused_total", "Target dials refused by session_dial_rate or session_max_dials.", &s.limits.Refused.Dials},
		{"usocks_limit_udp_refused_total", "UDP associations refused by session_max_udp.", &s.limits.Refused.UDP},
		{"usocks_limit_fds_refused_total", "Sessions, streams and UDP associations refused near the open file limit.", &s.limits.Refused.FDs},
	} {
		m.counter(c.name, c.help, "server", c.n.Load)
	}
	m.gauge("usocks_sessions_open", "Sessions running.", "server", s.limits.count)
	m.gauge("usocks_limit_fds_held", "Descriptors held by sessions, streams and UDP sockets (counted against the open file limit).", "server", s.limits.fds.held.Load)
	if r := s.resumes; r != nil {
		m.outcomes(resumptionsName, "Resumption (SPEC-v2.md §7b): offers resumed on a new backend, offers for a session not held (new) "+
			"or not resumable (lost), detached sessions that expired at resume_timeout, backends cut because a resumption claimed their session (taken_over).",
			"server", map[string]func() int64{"resumed": r.Resumed.Load, "new": r.New.Load, "lost": r.Lost.Load, "expired": r.Expired.Load, "taken_over": r.TakenOver.Load})
		m.counter("usocks_sessions_detached_total", "Sessions that lost their backend and waited for the client to resume them.", "server", r.Detached.Load)
		m.gauge("usocks_sessions_detached", "Sessions waiting, without a backend, for the client to resume them.", "server", r.waiting)
		m.resendBytes("server", &s.resendKept)
	}
	return m
}

// newClientMetrics is the client's metrics registry (nil if not configured).
func newClientMetrics(c *Client) *metrics {
	if c.cfg().Metrics == "" {
		return nil
	}
	m := newMetrics("client")
	m.stats(&c.Stats, "client")
	m.counter("usocks_reconnects_total", "Sessions that ended and were dialled again.", "client", c.Reconnects.Load)
	m.counter("usocks_rotations_total", "Backend rotations.", "client", c.Rotations.Load)
	m.outcomes(resumptionsName, "Resumption (SPEC-v2.md §7b): sessions resumed on a new backend, refused by the server (new: its connection "+
		"carries a new session), given up at resume_timeout (expired).",
		"client", map[string]func() int64{"resumed": c.Resumes.Load, "new": c.resumeNew.Load, "expired": c.resumeExpired.Load})
	m.resendBytes("client", &c.resendKept)
	return m
}

// serveMetrics starts a metrics server if one is configured.
func serveMetrics(ctx context.Context, m *metrics, addr string, log *logrus.Entry) (stop func(), err error) {
	if m == nil {
		return func() {}, nil
	}
	return m.serve(ctx, addr, log)
}

// MetricsAddr is where the server serves metrics ("" if it does not).
func (s *Server) MetricsAddr() string { return s.metrics.Addr() }

// MetricsAddr is where the client serves metrics ("" if it does not).
func (c *Client) MetricsAddr() string { return c.metrics.Addr() }
