package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Report is the outcome of one bench run.
type Report struct {
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"seconds"`
	CPUs      int       `json:"cpus"`
	Pinned    bool      `json:"pinned"`
	NoFile    uint64    `json:"nofile"`
	GoVersion string    `json:"go_version"`
	Kernel    string    `json:"kernel,omitempty"`
	// LoadAvg is the 1-minute load average at the start and at the end:
	// anything else busy on the machine skews the figures.
	LoadAvg [2]float64 `json:"loadavg"`
	// OtherCPU is the CPU time that other processes used during the run.
	OtherCPU float64         `json:"other_cpu_s"`
	Scale    Scale           `json:"scale"`
	Columns  []Column        `json:"columns"`
	Tunnels  []*TunnelResult `json:"tunnels"`
	// TTFB is time to first byte of a new proxied connection through a
	// delaying relay (ttfb.go), usocks v2 only.
	TTFB  []TTFBResult `json:"ttfb,omitempty"`
	Notes []string     `json:"notes,omitempty"`
}

// TunnelResult is one row: a tunnel's figures, keyed by Column.Key.
type TunnelResult struct {
	Key         string             `json:"key"`
	Name        string             `json:"name"`
	Detail      string             `json:"detail,omitempty"`
	Unavailable string             `json:"unavailable,omitempty"` // why the row is n/a
	Seconds     float64            `json:"seconds,omitempty"`
	Metrics     map[string]*Metric `json:"metrics"`
	Errors      map[string]string  `json:"errors,omitempty"` // first error per column
	Notes       []string           `json:"notes,omitempty"`
}

func (t *TunnelResult) set(key string, runs ...float64) {
	if m := NewMetric(runs...); m != nil {
		t.Metrics[key] = m
	}
}

func (t *TunnelResult) fail(key string, err error) {
	if _, ok := t.Errors[key]; !ok {
		t.Errors[key] = err.Error()
	}
}

// Column is one figure of the table.
type Column struct {
	Key    string `json:"key"`
	Head   string `json:"head"`
	Better string `json:"better,omitempty"` // "higher" or "lower"
	// Ratio: the other tunnels' rows also show value /
	// shadowsocks-libev's value.
	Ratio bool `json:"ratio"`
}

// Columns are the table's figures for a scale, in order.
func Columns(s Scale) []Column {
	return []Column{
		{"up_gbps", "up Gbit/s", "higher", true},
		{"down_gbps", "down Gbit/s", "higher", true},
		{"rr_p50_us", "RR p50 µs", "lower", true},
		{"rr_p99_us", "RR p99 µs", "lower", true},
		{"rr_cpu_client_us", "RR CPU cli µs", "lower", true},
		{"rr_cpu_server_us", "RR CPU srv µs", "lower", true},
		{"conn_per_s", "streams/s", "higher", true},
		{"conn_p99_ms", "stream p99 ms", "lower", true},
		{"conn_cpu_client_us", "stream CPU cli µs", "lower", true},
		{"conn_cpu_server_us", "stream CPU srv µs", "lower", true},
		{"many_s", fmt.Sprintf("%d×%s s", s.ManyStreams, sizeStr(s.ManyBytes)), "lower", true},
		{"many_lost_bytes", "lost B", "lower", false},
		{"rss_idle_client_mib", "RSS idle cli MiB", "lower", true},
		{"rss_idle_server_mib", "RSS idle srv MiB", "lower", true},
		{"rss_streams_client_mib", fmt.Sprintf("RSS %s str cli MiB", countStr(s.IdleStreams)), "lower", true},
		{"rss_streams_server_mib", fmt.Sprintf("RSS %s str srv MiB", countStr(s.IdleStreams)), "lower", true},
		{"rss_load_client_mib", fmt.Sprintf("RSS %s str after load cli MiB", countStr(s.IdleStreams)), "lower", true},
		{"rss_load_server_mib", fmt.Sprintf("RSS %s str after load srv MiB", countStr(s.IdleStreams)), "lower", true},
		{"rss_settled_client_mib", fmt.Sprintf("RSS %s later cli MiB", durStr(s.Settle)), "lower", true},
		{"rss_settled_server_mib", fmt.Sprintf("RSS %s later srv MiB", durStr(s.Settle)), "lower", true},
		{"cpu_client_s", "CPU cli s", "lower", true},
		{"cpu_server_s", "CPU srv s", "lower", true},
	}
}

func sizeStr(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func durStr(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return d.String()
}

func countStr(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// fmtNum prints a figure with about three significant digits.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// fmtRatio prints v/base as "1.6x".
func fmtRatio(v, base float64) string {
	if base == 0 || math.IsNaN(base) {
		return ""
	}
	r := v / base
	switch {
	case r >= 10:
		return fmt.Sprintf("%.0fx", r)
	case r >= 1:
		return fmt.Sprintf("%.1fx", r)
	default:
		return fmt.Sprintf("%.2fx", r)
	}
}

// hasRatio says whether a row gets ratios to shadowsocks-libev: every
// tunnel but direct TCP and shadowsocks-libev itself.
func hasRatio(key string) bool { return key != Direct && key != SS }

// cell is one table cell of a figure: its median, and for usocks rows its
// ratio to shadowsocks-libev.
func (r *Report) cell(t *TunnelResult, c Column, ss *TunnelResult) string {
	m := t.Metrics[c.Key]
	if c.Key == "many_lost_bytes" {
		if m == nil {
			if _, failed := t.Errors["many_s"]; failed {
				return "err"
			}
			return "-"
		}
		s := fmt.Sprintf("%.0f", m.Median)
		if b := t.Metrics["many_bad_streams"]; b != nil && b.Median > 0 {
			s += fmt.Sprintf(" (%.0f bad)", b.Median)
		}
		return s
	}
	if m == nil {
		if _, failed := t.Errors[c.Key]; failed {
			return "err"
		}
		return "-"
	}
	s := fmtNum(m.Median)
	if _, failed := t.Errors[c.Key]; failed {
		s += "!"
	}
	if c.Ratio && ss != nil && hasRatio(t.Key) {
		if base := ss.Metrics[c.Key]; base != nil {
			if q := fmtRatio(m.Median, base.Median); q != "" {
				s += " (" + q + ")"
			}
		}
	}
	return s
}

// rangeCell is min–max of a figure measured more than once.
func rangeCell(t *TunnelResult, c Column) string {
	m := t.Metrics[c.Key]
	if m == nil || len(m.Runs) < 2 {
		return "-"
	}
	return fmtNum(m.Min) + "–" + fmtNum(m.Max)
}

func (r *Report) ssRow() *TunnelResult {
	for _, t := range r.Tunnels {
		if t.Key == SS && t.Unavailable == "" {
			return t
		}
	}
	return nil
}

// row is a table row; a spanning row prints its second cell unaligned.
type row struct {
	cells []string
	span  bool
}

// WriteTable prints the medians table, the ranges table and the notes,
// as aligned text or as Markdown.
func (r *Report) WriteTable(w io.Writer, markdown bool) error {
	ss := r.ssRow()
	head := []string{"tunnel"}
	for _, c := range r.Columns {
		head = append(head, c.Head)
	}
	var med, rng []row
	for _, t := range r.Tunnels {
		if t.Unavailable != "" {
			med = append(med, row{cells: []string{t.Name, "n/a (" + t.Unavailable + ")"}, span: true})
			continue
		}
		mr := row{cells: []string{t.Name}}
		rr := row{cells: []string{t.Name}}
		for _, c := range r.Columns {
			mr.cells = append(mr.cells, r.cell(t, c, ss))
			rr.cells = append(rr.cells, rangeCell(t, c))
		}
		med = append(med, mr)
		rng = append(rng, rr)
	}
	var b strings.Builder
	pin := "not pinned"
	if r.Pinned {
		pin = "CPU 0: load generator + tunnel client, CPU 1: tunnel server + target"
	}
	fmt.Fprintf(&b, "usocks bench: loopback, %s; median of %d interleaved runs; %.0f s in all; other processes used %.1f CPU-s (load average %.2f at the start, %.2f at the end)\n\n",
		pin, r.Scale.Runs, r.Seconds, r.OtherCPU, r.LoadAvg[0], r.LoadAvg[1])
	writeRows(&b, head, med, markdown)
	fmt.Fprintf(&b, "\nranges (min–max of %d runs):\n\n", r.Scale.Runs)
	writeRows(&b, head, rng, markdown)
	if len(r.TTFB) > 0 {
		fmt.Fprintf(&b, "\ntime to first byte of a new proxied connection, usocks v2, through a relay holding every chunk %v each way (one tunnel round trip: %v); median of %d, in round trips (the slowest):\n\n",
			TTFBDelay, 2*TTFBDelay, r.Scale.TTFBSamples)
		var rows []row
		for _, t := range r.TTFB {
			if t.Error != "" {
				rows = append(rows, row{cells: []string{t.Path, "defense " + t.Defense + ": error: " + t.Error}, span: true})
				continue
			}
			rows = append(rows, row{cells: []string{t.Path, t.Defense, fmt.Sprintf("%.1f", t.P50ms),
				fmt.Sprintf("%.2f (%.2f)", t.P50RTT, t.MaxRTT)}})
		}
		writeRows(&b, []string{"path", "defense", "ms", "round trips (max)"}, rows, markdown)
	}
	b.WriteString("\n")
	for _, n := range r.legend() {
		if markdown {
			b.WriteString("- ")
		}
		b.WriteString(n + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// legend explains the columns and lists details, errors and notes.
func (r *Report) legend() []string {
	s := r.Scale
	out := []string{
		"(N.Nx) is the figure divided by shadowsocks-libev's from the same run; err: the workload failed (see below); !: some runs failed.",
		fmt.Sprintf("up/down: one stream, %v each way per run. RR: %d round trips of %d bytes on one stream (p50/p99), at most %v a run (a paced tunnel: those done by then, see its notes).", s.Bulk, s.RoundTrips, s.MsgSize, RoundTripLimit),
		fmt.Sprintf("streams/s: connect, 1-byte echo, close (the target first), %d at a time for %v; stream p99: connect to first echo. The usocks servers run with session_dial_rate %d (the default, 1000 dials a second per session, would cap the figure).", s.ConnConcurrency, s.Connect, BenchDialRate),
		fmt.Sprintf("%d×%s: that many streams at once, each echoed and SHA-256-checked; lost B: bytes not echoed intact, all runs.", s.ManyStreams, sizeStr(s.ManyBytes)),
		fmt.Sprintf("RSS: VmRSS of the tunnel's client (cli) and server (srv), idle and holding %d open idle streams, on fresh processes before the other workloads; again holding %[1]d idle streams after all the other workloads (after load), and %[3]s after those streams closed (later). CPU: user+system seconds of each side for one %[2]d-stream run.", s.IdleStreams, s.ManyStreams, durStr(s.Settle)),
	}
	for _, t := range r.Tunnels {
		if t.Detail != "" {
			out = append(out, fmt.Sprintf("%s: %s", t.Name, t.Detail))
		}
	}
	for _, t := range r.Tunnels {
		for _, c := range r.Columns {
			if e, ok := t.Errors[c.Key]; ok {
				out = append(out, fmt.Sprintf("error: %s, %s: %s", t.Name, c.Head, e))
			}
		}
		for _, n := range t.Notes {
			out = append(out, fmt.Sprintf("%s: %s", t.Name, n))
		}
	}
	return append(out, r.Notes...)
}

func writeRows(b *strings.Builder, head []string, rows []row, markdown bool) {
	if markdown {
		mdRow(b, head)
		sep := make([]string, len(head))
		for i := range sep {
			sep[i] = "---:"
		}
		sep[0] = "---"
		mdRow(b, sep)
		for _, r := range rows {
			mdRow(b, r.cells)
		}
		return
	}
	width := make([]int, len(head))
	for i, h := range head {
		width[i] = utf8.RuneCountInString(h)
	}
	for _, r := range rows {
		for i, c := range r.cells {
			if r.span && i > 0 {
				break
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	line := func(cells []string, span bool) {
		var l strings.Builder
		for i, c := range cells {
			if i > 0 {
				l.WriteString("  ")
			}
			pad := strings.Repeat(" ", max(0, width[i]-utf8.RuneCountInString(c)))
			switch {
			case span && i > 0:
				l.WriteString(c)
			case i == 0:
				l.WriteString(c + pad)
			default:
				l.WriteString(pad + c)
			}
		}
		b.WriteString(strings.TrimRight(l.String(), " ") + "\n")
	}
	line(head, false)
	for _, r := range rows {
		line(r.cells, r.span)
	}
}

func mdRow(b *strings.Builder, cells []string) {
	b.WriteString("|")
	for _, c := range cells {
		b.WriteString(" " + strings.ReplaceAll(c, "|", "\\|") + " |")
	}
	b.WriteString("\n")
}

// WriteJSON prints the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
