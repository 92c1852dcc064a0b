package wfbench

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// WriteTraces writes a run's raw traces, one load per line:
//
//	PAGE LOAD PLT_US APP_BYTES T_US:SIZE T_US:SIZE ...
//
// with times in microseconds from the load's start and sizes positive
// for client → server.
func WriteTraces(w io.Writer, r *RunResult) error {
	bw := bufio.NewWriter(w)
	for _, s := range r.Samples {
		fmt.Fprintf(bw, "%d %d %d %d", s.Page, s.Load, s.PLT.Microseconds(), s.App)
		for _, p := range s.Trace {
			fmt.Fprintf(bw, " %d:%d", p.T.Microseconds(), p.Size)
		}
		if err := bw.WriteByte('\n'); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ReadTraces reads what WriteTraces wrote.
func ReadTraces(r io.Reader) ([]Sample, error) {
	var out []Sample
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			return nil, fmt.Errorf("line %d: want PAGE LOAD PLT_US APP_BYTES", line)
		}
		var v [4]int64
		for i := range v {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", line, err)
			}
			v[i] = n
		}
		s := Sample{Page: int(v[0]), Load: int(v[1]), PLT: time.Duration(v[2]) * time.Microsecond, App: v[3]}
		for _, p := range f[4:] {
			ts, sz, ok := strings.Cut(p, ":")
			t, err1 := strconv.ParseInt(ts, 10, 64)
			n, err2 := strconv.ParseInt(sz, 10, 32)
			if !ok || err1 != nil || err2 != nil {
				return nil, fmt.Errorf("line %d: bad packet %q", line, p)
			}
			s.Trace = append(s.Trace, Packet{time.Duration(t) * time.Microsecond, int32(n)})
		}
		out = append(out, s)
	}
	return out, sc.Err()
}
