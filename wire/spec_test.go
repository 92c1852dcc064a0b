package wire

import (
	"os"
	"strings"
	"testing"
)

func readSpec(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("SPEC-v2.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// specSection is the text of the section whose heading starts with head,
// up to the next heading of its level, with each run of white space
// (line breaks included) as one space.
func specSection(t *testing.T, spec, head string) string {
	t.Helper()
	i := strings.Index(spec, "\n"+head)
	if i < 0 {
		t.Fatalf("SPEC-v2.md lacks a section %q", head)
	}
	rest := spec[i+1+len(head):]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		rest = rest[:j]
	}
	return strings.Join(strings.Fields(rest), " ")
}

// TestSpecStatesGuarantees: the protocol spec beside the code says what v2
// guarantees and what it does not, and names what the tests check.
func TestSpecStatesGuarantees(t *testing.T) {
	spec := readSpec(t)
	for _, want := range []string{
		"## 9. Security properties", "## 10. Non-goals",
		"Forward secrecy", "Replay rejection", "Server authentication",
		"Traffic analysis", "usocks v2 c2s", "usocks v2 s2c", "usocks v2 rekey", "usocks v2 identity",
	} {
		if !strings.Contains(spec, want) {
			t.Errorf("SPEC-v2.md lacks %q", want)
		}
	}
}

// TestSpecStatesReceiverRules: an independent implementation can learn from
// the spec alone what to do with every frame type, malformed or unexpected,
// in every stream state, and when a stream id may be reused.
func TestSpecStatesReceiverRules(t *testing.T) {
	spec := readSpec(t)
	states := specSection(t, spec, "## 6c. Stream states")
	for _, want := range []string{
		"| idle |", "| opening |", "| open |", "| local-fin |", "| remote-fin |", "| closed |", "| reset |",
		"**Id reuse.**", "duplicate SYN",
	} {
		if !strings.Contains(states, want) {
			t.Errorf("stream states (§6c) lack %q", want)
		}
	}
	rules := specSection(t, spec, "## 6d. Receiver rules")
	// Every frame type the codec knows, reserved ones included.
	for typ := FrameStream; typ <= FrameControl; typ++ {
		if !strings.Contains(rules, typ.String()) {
			t.Errorf("receiver rules (§6d) do not say what to do with %s", typ)
		}
	}
	for _, want := range []string{
		// The frame checks of ParseFrame, with the errors they map to.
		"Protocol error", "shorter than 6 bytes", "`padLen` > length − 6", "11..255",
		"Reserved bits", "Padding may", "16 KiB",
		// Every STREAM flag and state pair has a row and a column.
		"| RST |", "| SYN at the server |", "| SYN at the client |", "| DAT payload |", "| FIN |",
		"| WINDOW |", "| DATAGRAM |", "idle (not held)", "closed, reset (held)", "max_streams",
		"**Flow control.**", "2^30", "**DATAGRAM.**", "never answered",
		"flood", "second CLOSE", "two rekeys",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("receiver rules (§6d) lack %q", want)
		}
	}
}
