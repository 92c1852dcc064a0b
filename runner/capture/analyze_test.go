package capture

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"usocks/wire"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func wireEv(sess int, t time.Duration, d Dir, n int) Event {
	return Event{T: t, Session: sess, Dir: d, Layer: LayerBackend, N: int64(n)}
}

func frameEv(d Dir, typ wire.FrameType, n, pad int) Event {
	return Event{Session: 1, Dir: d, Layer: LayerFrame, Frame: Frame{Type: typ, Stream: 1, Len: n, Pad: pad}}
}

// record is the wire size of a v2 record carrying n payload and pad bytes.
func record(n, pad int) int { return wire.RecordOverhead + wire.FrameHeaderLen + n + pad }

func TestAnalyzer(t *testing.T) {
	v2 := Header{Version: Version, Protocol: "v2", Role: "client"}
	v1h := Header{Version: Version, Protocol: "v1", Role: "server"}
	for _, c := range []struct {
		name   string
		hdr    Header
		events []Event
		check  func(a *Analysis) string // "" when right
	}{
		{"one write cut into segments", v2, []Event{wireEv(1, 0, DirOut, 3000)}, func(a *Analysis) string {
			o := &a.Out
			return expect(o.WireBytes == 3000 && o.Packets == 3 && bin(o.PacketSizes, 1448) == 2 && bin(o.PacketSizes, 104) == 1 &&
				o.Bursts.N == 1 && o.Bursts.Max == 3000 && o.InterArrival.N == 2 && o.InterArrival.Max == 0 && a.In.Packets == 0, o)
		}},
		{"bursts end at a direction change or an idle gap", v2, []Event{
			wireEv(1, 0, DirOut, 100), wireEv(1, ms(50), DirOut, 200), // one burst
			wireEv(1, ms(200), DirOut, 300), // 150 ms idle: a new one
			wireEv(1, ms(210), DirIn, 400),  // the other side
			wireEv(1, ms(220), DirOut, 10),
		}, func(a *Analysis) string {
			o, i := &a.Out, &a.In
			return expect(o.Bursts.N == 3 && o.Bursts.P10 == 10 && o.Bursts.P50 == 300 && o.Bursts.Max == 300 &&
				i.Bursts.N == 1 && i.Bursts.Max == 400 &&
				o.InterArrival.N == 3 && o.InterArrival.P10 == 20000 && o.InterArrival.P50 == 50000 && o.InterArrival.Max == 150000, a)
		}},
		{"a gap of exactly the limit continues the burst", v2, []Event{
			wireEv(1, 0, DirOut, 1), wireEv(1, ms(100), DirOut, 1),
		}, func(a *Analysis) string { return expect(a.Out.Bursts.N == 1 && a.Out.Bursts.Max == 2, a.Out.Bursts) }},
		{"connections are observed apart", v2, []Event{
			wireEv(1, 0, DirOut, 100), wireEv(2, ms(1), DirIn, 100), wireEv(1, ms(2), DirOut, 100), wireEv(2, ms(3), DirIn, 50),
		}, func(a *Analysis) string {
			return expect(a.Sessions == 2 && a.Out.Bursts.N == 1 && a.Out.Bursts.Max == 200 && a.In.Bursts.N == 1 && a.In.Bursts.Max == 150 &&
				a.Out.InterArrival.Max == 2000 && a.In.InterArrival.Max == 2000, a)
		}},
		{"records, dummies, payload and overhead", v2, []Event{
			{Session: 1, Dir: DirOut, Layer: LayerHandshake, N: 500},
			frameEv(DirOut, wire.FrameStream, 1000, 10), frameEv(DirOut, wire.FramePad, 0, 300),
			frameEv(DirOut, wire.FrameDatagram, 100, 0), frameEv(DirOut, wire.FrameWindow, 4, 0),
			wireEv(1, ms(1), DirOut, record(1000, 10)+record(0, 300)+record(100, 0)+record(4, 0)),
		}, func(a *Analysis) string {
			o := &a.Out
			wireBytes := 500 + record(1000, 10) + record(0, 300) + record(100, 0) + record(4, 0)
			return expect(o.Records == 4 && o.PadRecords == 1 && o.PadBytes == int64(record(0, 300)) && o.PayloadBytes == 1100 &&
				o.HandshakeBytes == 500 && o.WireBytes == int64(wireBytes) &&
				fmt.Sprintf("%.2f", o.OverheadPct()) == fmt.Sprintf("%.2f", 100*float64(wireBytes-1100)/1100) &&
				bin(o.RecordSizes, record(1000, 10)) == 1 && bin(o.RecordSizes, record(4, 0)) == 1 && bin(o.RecordSizes, record(0, 300)) == 1, o)
		}},
		{"v1: no record sizes", v1h, []Event{frameEv(DirIn, wire.FramePad, 0, 0), frameEv(DirIn, wire.FrameStream, 5, 0)}, func(a *Analysis) string {
			var n int64
			for _, b := range a.In.RecordSizes {
				n += b.Count
			}
			return expect(n == 0 && a.In.PadRecords == 1 && a.In.PadBytes == 0 && a.In.PayloadBytes == 5 && a.In.OverheadPct() == -100, a.In)
		}},
		{"file-level and session-level events do not count", v2, []Event{
			{Session: 1, Layer: LayerOpen}, {Session: 1, Layer: LayerEnd, Result: "clean"},
			{Layer: LayerClose, Events: 3, Dropped: 7},
		}, func(a *Analysis) string {
			return expect(a.Sessions == 0 && a.Events == 3 && a.Dropped == 7 && a.Out.Packets == 0 && a.Out.OverheadPct() == 0, a)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			z := NewAnalyzer(c.hdr, 0, 0)
			for i := range c.events {
				z.Add(&c.events[i])
			}
			if msg := c.check(z.Result()); msg != "" {
				t.Fatal(msg)
			}
		})
	}
}

func expect(ok bool, got any) string {
	if ok {
		return ""
	}
	return fmt.Sprintf("got %+v", got)
}

// bin is the count of the histogram bin that holds v.
func bin(h Histogram, v int) int64 {
	for _, b := range h {
		if v >= b.Lo && v <= b.Hi {
			return b.Count
		}
	}
	return -1
}

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Summary
	}{
		{nil, Summary{}},
		{[]float64{5}, Summary{N: 1, Mean: 5, P10: 5, P50: 5, P90: 5, P99: 5, Max: 5}},
		{[]float64{4, 1, 3, 2}, Summary{N: 4, Mean: 2.5, P10: 1, P50: 2, P90: 4, P99: 4, Max: 4}},
		{func() []float64 {
			v := make([]float64, 100)
			for i := range v {
				v[i] = float64(100 - i)
			}
			return v
		}(), Summary{N: 100, Mean: 50.5, P10: 10, P50: 50, P90: 90, P99: 99, Max: 100}},
	} {
		if got := summarize(c.in); got != c.want {
			t.Errorf("summarize(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestHistogramBins(t *testing.T) {
	p := packetBins(DefaultMSS)
	if p[0].Lo != 1 || p[len(p)-1] != (Bin{Lo: DefaultMSS, Hi: DefaultMSS}) || p[len(p)-2].Hi != DefaultMSS-1 {
		t.Fatalf("packet bins %v", p)
	}
	r := recordBins()
	if r[len(r)-1].Hi < wire.MaxBodyLen+wire.RecordOverhead {
		t.Fatalf("record bins end at %d", r[len(r)-1].Hi)
	}
	for i := 1; i < len(p); i++ {
		if p[i].Lo != p[i-1].Hi+1 {
			t.Fatalf("packet bins not contiguous at %d: %v", i, p)
		}
	}
}

// On a committed capture: the wire bytes are the file's hs and backend
// bytes, and the report and JSON carry them.
func TestAnalyzeCapture(t *testing.T) {
	path := filepath.Join(capturesDir, "v2-plaintext.capture")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want [3]int64
	for _, l := range strings.Split(string(raw), "\n") {
		e, err := ParseEvent(l)
		if err == nil && (e.Layer == LayerBackend || e.Layer == LayerHandshake) {
			want[e.Dir] += e.N
		}
	}
	damaged := strings.Replace(string(raw), "\n0.", "\nnot an event\n0.", 1)
	a, err := Analyze(strings.NewReader(damaged), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a.Out.WireBytes != want[DirOut] || a.In.WireBytes != want[DirIn] || a.Sessions != 2 || a.BadLines != 1 {
		t.Fatalf("out %d in %d sessions %d bad %d; want out %d in %d, 2 sessions, 1 bad line",
			a.Out.WireBytes, a.In.WireBytes, a.Sessions, a.BadLines, want[DirOut], want[DirIn])
	}
	var text, js bytes.Buffer
	if err := a.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"taken at the server, 2 sessions", "out (server → client)", fmt.Sprint(want[DirIn]), "packet sizes, in (client → server)", "record sizes"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, text.String())
		}
	}
	if err := a.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct{ Out struct{ WireBytes int64 } }
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Out.WireBytes != want[DirOut] {
		t.Fatalf("JSON: %v %+v\n%s", err, back, js.String())
	}
	if _, err := Analyze(strings.NewReader("hello\n"), 0, 0); err == nil {
		t.Fatal("a file that is not a capture analyzed")
	}
}
