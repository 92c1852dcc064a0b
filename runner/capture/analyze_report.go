package capture

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// names says which way each direction goes, from the capture's role.
func (a *Analysis) names() (out, in string) {
	if a.Header.Role == "server" {
		return "out (server → client)", "in (client → server)"
	}
	return "out (client → server)", "in (server → client)"
}

// WriteText prints the analysis as tables and histograms.
func (a *Analysis) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "capture: protocol %s, taken at the %s, %d sessions, %d events (%d bad lines skipped, %d events lost by the capture)\n",
		a.Header.Protocol, a.Header.Role, a.Sessions, a.Events, a.BadLines, a.Dropped)
	if a.Links > 0 {
		fmt.Fprintf(&b, "of the %d backend connections, %d carry a later link of a resumed session\n", a.Sessions, a.Links)
	}
	fmt.Fprintf(&b, "observer: each write cut into TCP segments of at most %d bytes (1500-byte MTU); a burst ends when the other side sends or after %s idle\n\n",
		a.MSS, a.BurstGap)
	on, in := a.names()
	row := func(name string, f func(d *DirStats) string) {
		fmt.Fprintf(&b, "%-32s %24s %24s\n", name, f(&a.Out), f(&a.In))
	}
	row("", func(d *DirStats) string {
		if d == &a.Out {
			return on
		}
		return in
	})
	row("wire bytes", func(d *DirStats) string { return fmt.Sprint(d.WireBytes) })
	row("of which handshake", func(d *DirStats) string { return fmt.Sprint(d.HandshakeBytes) })
	row("payload bytes", func(d *DirStats) string { return fmt.Sprint(d.PayloadBytes) })
	row("overhead (wire−payload)/payload", func(d *DirStats) string {
		if d.PayloadBytes == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f %%", d.OverheadPct())
	})
	row("packets", func(d *DirStats) string { return fmt.Sprint(d.Packets) })
	row("records (frame events)", func(d *DirStats) string { return fmt.Sprint(d.Records) })
	row("PAD records (dummies)", func(d *DirStats) string {
		if a.Header.Protocol == "v1" {
			return fmt.Sprint(d.PadRecords)
		}
		return fmt.Sprintf("%d (%d bytes)", d.PadRecords, d.PadBytes)
	})
	row("bursts", func(d *DirStats) string { return fmt.Sprint(d.Bursts.N) })
	summary := func(name string, get func(d *DirStats) Summary) {
		for _, p := range []struct {
			name string
			v    func(s Summary) float64
		}{{"p10", func(s Summary) float64 { return s.P10 }}, {"median", func(s Summary) float64 { return s.P50 }},
			{"p90", func(s Summary) float64 { return s.P90 }}, {"p99", func(s Summary) float64 { return s.P99 }},
			{"max", func(s Summary) float64 { return s.Max }}} {
			row(name+" "+p.name, func(d *DirStats) string {
				if get(d).N == 0 {
					return "-"
				}
				return fmt.Sprintf("%.0f", p.v(get(d)))
			})
		}
	}
	summary("burst bytes", func(d *DirStats) Summary { return d.Bursts })
	summary("inter-arrival µs", func(d *DirStats) Summary { return d.InterArrival })
	for _, h := range []struct {
		title string
		dir   string
		h     Histogram
	}{{"packet sizes", on, a.Out.PacketSizes}, {"packet sizes", in, a.In.PacketSizes},
		{"record sizes", on, a.Out.RecordSizes}, {"record sizes", in, a.In.RecordSizes}} {
		if h.title == "record sizes" && a.Header.Protocol == "v1" {
			continue
		}
		writeHistogram(&b, h.title+", "+h.dir, h.h)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeHistogram(b *strings.Builder, title string, h Histogram) {
	var total, top int64
	for _, bin := range h {
		total += bin.Count
		top = max(top, bin.Count)
	}
	fmt.Fprintf(b, "\n%s: %d\n", title, total)
	for _, bin := range h {
		if bin.Count == 0 {
			continue
		}
		bar := strings.Repeat("#", int((bin.Count*40+top-1)/top))
		label := fmt.Sprintf("%d-%d", bin.Lo, bin.Hi)
		if bin.Lo == bin.Hi {
			label = fmt.Sprint(bin.Lo)
		}
		fmt.Fprintf(b, "  %11s %9d %5.1f%% %s\n", label, bin.Count, 100*float64(bin.Count)/float64(total), bar)
	}
}

// WriteJSON prints the analysis as one JSON object.
func (a *Analysis) WriteJSON(w io.Writer) error {
	type dir struct {
		*DirStats
		Name        string
		OverheadPct float64
	}
	on, in := a.names()
	v := struct {
		Protocol, Role  string
		Plaintext       bool
		MSS             int
		BurstGapMs      float64
		Sessions, Links int
		Events, Bad     int
		Dropped         int64
		Out, In         dir
	}{a.Header.Protocol, a.Header.Role, a.Header.Plaintext, a.MSS, float64(a.BurstGap.Microseconds()) / 1000,
		a.Sessions, a.Links, a.Events, a.BadLines, a.Dropped,
		dir{&a.Out, on, a.Out.OverheadPct()}, dir{&a.In, in, a.In.OverheadPct()}}
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}
