package capture

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// rline is one line of the listing; text and JSON are made from it.
type rline struct {
	Line    int          `json:"line"`
	T       *json.Number `json:"t,omitempty"`
	Session int          `json:"session"`
	Dir     string       `json:"dir"`
	Kind    string       `json:"kind"`
	Type    string       `json:"type,omitempty"`
	Stream  *int         `json:"stream,omitempty"`
	Flags   string       `json:"flags,omitempty"`
	Len     *int         `json:"len,omitempty"`
	Pad     *int         `json:"pad,omitempty"`
	Size    *int         `json:"size,omitempty"`
	Data    string       `json:"data,omitempty"`
	Error   string       `json:"error,omitempty"`
	Info    string       `json:"info,omitempty"`
}

// emit prints l unless the filters hide it.
func (rp *replayer) emit(l *rline) {
	if l.Line == 0 {
		l.Line = rp.line
	}
	if !rp.o.NoTime && l.Kind != "capture" && l.Kind != "summary" {
		n := json.Number(fmtSeconds(rp.t))
		l.T = &n
	}
	if !rp.shown(l) {
		return
	}
	if rp.o.JSON {
		b, _ := json.Marshal(l)
		_, _ = rp.out.Write(append(b, '\n'))
		return
	}
	var sb strings.Builder
	if l.T != nil {
		fmt.Fprintf(&sb, "%12s ", string(*l.T))
	}
	if l.Kind == "capture" || l.Kind == "summary" {
		fmt.Fprintf(&sb, "%s: %s\n", l.Kind, l.Info)
		_, _ = rp.out.WriteString(sb.String())
		return
	}
	fmt.Fprintf(&sb, "s%-3d %-3s %-7s ", l.Session, l.Dir, l.Kind)
	switch l.Kind {
	case "record", "frame":
		sb.WriteString(l.Type)
		if l.Stream != nil {
			fmt.Fprintf(&sb, " stream=%d", *l.Stream)
		}
		if l.Flags != "" {
			fmt.Fprintf(&sb, " flags=%s", l.Flags)
		}
		if l.Len != nil {
			fmt.Fprintf(&sb, " len=%d", *l.Len)
		}
		if l.Pad != nil {
			fmt.Fprintf(&sb, " pad=%d", *l.Pad)
		}
		if l.Size != nil {
			fmt.Fprintf(&sb, " size=%d", *l.Size)
		}
		if l.Data != "" {
			d := l.Data
			if len(d) > 32 {
				d = d[:32] + fmt.Sprintf("…(%d bytes)", len(l.Data)/2)
			}
			fmt.Fprintf(&sb, " data=%s", d)
		}
		if l.Info != "" {
			sb.WriteString(" " + l.Info)
		}
	case "error":
		sb.WriteString("ERROR " + l.Error)
		if l.Line > 0 {
			fmt.Fprintf(&sb, " (capture line %d)", l.Line)
		}
	default:
		sb.WriteString(l.Info)
	}
	sb.WriteByte('\n')
	_, _ = rp.out.WriteString(sb.String())
}

func (rp *replayer) shown(l *rline) bool {
	if l.Kind == "capture" || l.Kind == "summary" {
		return true
	}
	if rp.o.Dir != DirNone && l.Dir != "-" && l.Dir != rp.o.Dir.String() {
		return false
	}
	if rp.o.Stream >= 0 {
		switch l.Kind {
		case "record", "frame":
			return l.Stream != nil && *l.Stream == rp.o.Stream
		case "hs", "hello", "backend":
			return false
		}
		if l.Stream != nil && *l.Stream != rp.o.Stream {
			return false
		}
	}
	return true
}

func fmtSeconds(d time.Duration) string {
	e := Event{T: d}
	b := e.AppendLine(nil)
	s, _, _ := strings.Cut(string(b), " ")
	return s
}

func intp(v int) *int { return &v }

// note prints a session-level remark; once per session and text.
func (rp *replayer) note(s *rsess, text string) {
	id := 0
	if s != nil {
		if s.notes[text] {
			return
		}
		s.notes[text] = true
		id = s.id
	}
	rp.emit(&rline{Session: id, Dir: "-", Kind: "note", Info: text})
}

func (rp *replayer) fail(s *rsess, d Dir, stream *int, msg string) {
	rp.stats.Errors++
	id := 0
	if s != nil {
		id = s.id
	}
	rp.emit(&rline{Session: id, Dir: d.String(), Kind: "error", Stream: stream, Error: msg})
}
