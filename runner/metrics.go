package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"usocks/stages"
)

// Prometheus metrics (config key `metrics: 127.0.0.1:9090`, off by
// default). Every series is named usocks_… and labelled side=client or
// side=server. Counters that the tunnel keeps anyway (stages.Stats, the
// server's session counters) are read at scrape time; what only the
// access log sees (bytes per user) is counted here.

// metrics is one side's Prometheus registry and the counters only it keeps.
type metrics struct {
	addr      atomic.Pointer[string] // where it serves, once bound
	reg       *prometheus.Registry
	bytes     *prometheus.CounterVec // direction, user
	streams   *prometheus.CounterVec // end
	handshake *prometheus.CounterVec // reason
	reloads   *prometheus.CounterVec // result
	reloadOK  prometheus.Gauge       // 1 if the last reload succeeded
	reloadAt  prometheus.Gauge       // time of the last successful reload (or the start)
}

func newMetrics(side string) *metrics {
	reg := prometheus.NewRegistry()
	labels := prometheus.Labels{"side": side}
	m := &metrics{reg: reg,
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usocks_stream_bytes_total", ConstLabels: labels,
			Help: "Bytes of ended streams: up toward the target, down back to the app; by user on a multi-user server."}, []string{"direction", "user"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usocks_streams_ended_total", ConstLabels: labels,
			Help: "Streams ended, by how: closed, reset, open failed."}, []string{"end"}),
		handshake: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usocks_handshake_failures_total", ConstLabels: labels,
			Help: "Connections refused in the handshake, by reason."}, []string{"reason"}),
	}
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usocks_config_reloads_total", ConstLabels: labels,
		Help: "Config reloads (SIGHUP), by result: applied, or refused (the running config stays)."}, []string{"result"})
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "usocks_config_last_reload_successful", ConstLabels: labels,
		Help: "1 if the last config reload was applied (or none was tried), 0 if it was refused."})
	m.reloadAt = prometheus.NewGauge(prometheus.GaugeOpts{Name: "usocks_config_last_reload_success_timestamp_seconds", ConstLabels: labels,
		Help: "Unix time of the last applied config reload, or of the start."})
	m.reloadOK.Set(1)
	m.reloadAt.SetToCurrentTime()
	reg.MustRegister(m.bytes, m.streams, m.handshake, m.reloads, m.reloadOK, m.reloadAt,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// counter exposes a count the tunnel keeps as a Prometheus counter.
func (m *metrics) counter(name, help, side string, load func() int64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help,
		ConstLabels: prometheus.Labels{"side": side}}, func() float64 { return float64(load()) }))
}

// outcomes exposes counts the tunnel keeps as one Prometheus counter
// labelled outcome=….
func (m *metrics) outcomes(name, help, side string, loads map[string]func() int64) {
	for outcome, load := range loads {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help,
			ConstLabels: prometheus.Labels{"side": side, "outcome": outcome}}, func() float64 { return float64(load()) }))
	}
}

// resendBytes exposes the resend buffers of resumable sessions, summed.
func (m *metrics) resendBytes(side string, kept *atomic.Int64) {
	m.gauge("usocks_resend_buffer_bytes", "Bytes held by the resend buffers of resumable sessions (SPEC-v2.md §7b), summed: "+
		"frames sent and not yet acknowledged, payload plus a fixed cost per frame.", side, kept.Load)
}

// gauge exposes a level the tunnel keeps as a Prometheus gauge.
func (m *metrics) gauge(name, help, side string, load func() int64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help,
		ConstLabels: prometheus.Labels{"side": side}}, func() float64 { return float64(load()) }))
}

// stats exposes every counter of stages.Stats, named after its field
// (DefenceDummy → usocks_defence_dummy_total), so counters added there
// show up without a change here.
func (m *metrics) stats(st *stages.Stats, side string) {
	v := reflect.ValueOf(st).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		switch c := v.Field(i).Addr().Interface().(type) {
		case *atomic.Int64:
			m.counter("usocks_"+snake(f.Name)+"_total", "stages.Stats."+f.Name, side, c.Load)
		case *atomic.Int32: // a state, not a count
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "usocks_" + snake(f.Name), Help: "stages.Stats." + f.Name,
				ConstLabels: prometheus.Labels{"side": side}}, func() float64 { return float64(c.Load()) }))
		}
	}
}

// stream counts an ended stream (a nil m counts nothing).
func (m *metrics) stream(user string, e stages.StreamEnd, up, down int64) {
	if m == nil {
		return
	}
	m.bytes.WithLabelValues("up", user).Add(float64(up))
	m.bytes.WithLabelValues("down", user).Add(float64(down))
	m.streams.WithLabelValues(e.How).Inc()
}

// reloaded counts a config reload (a nil m counts nothing).
func (m *metrics) reloaded(ok bool) {
	if m == nil {
		return
	}
	if !ok {
		m.reloads.WithLabelValues("refused").Inc()
		m.reloadOK.Set(0)
		return
	}
	m.reloads.WithLabelValues("applied").Inc()
	m.reloadOK.Set(1)
	m.reloadAt.SetToCurrentTime()
}

// handshakeFailed counts a refused handshake by the first words of its
// reason (reasons are a fixed set; details after ':' or '(' are dropped
// so the label stays bounded).
func (m *metrics) handshakeFailed(reason string) {
	if m == nil {
		return
	}
	reason = strings.TrimPrefix(reason, "handshake rejected: ")
	if i := strings.IndexAny(reason, ":("); i > 0 {
		reason = reason[:i]
	}
	m.handshake.WithLabelValues(strings.TrimSpace(reason)).Inc()
}

func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// checkMetricsAddr accepts host:port on a loopback address unless remote
// access is asked for explicitly.
func checkMetricsAddr(p *problems, addr string, allowRemote bool) {
	if addr == "" {
		return
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		p.bad("metrics", "%q: want ADDR:PORT, such as 127.0.0.1:9090", addr)
		return
	}
	ip := net.ParseIP(host)
	if allowRemote || host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return
	}
	p.bad("metrics", "%q is not a loopback address: metrics tell anyone who can reach them who uses this tunnel and how much; "+
		"keep 127.0.0.1, or set metrics_allow_remote: true (and firewall the port)", addr)
}

// serve serves /metrics on addr until ctx ends; it returns once bound.
func (m *metrics) serve(ctx context.Context, addr string, log *logrus.Entry) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	bound := ln.Addr().String()
	m.addr.Store(&bound)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Warn("metrics server stopped")
		}
	}()
	log.WithField("metrics", "http://"+ln.Addr().String()+"/metrics").Info("serving metrics")
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}, nil
}

// Addr is where metrics are served ("" if they are not).
func (m *metrics) Addr() string {
	if m == nil {
		return ""
	}
	if a := m.addr.Load(); a != nil {
		return *a
	}
	return ""
}
