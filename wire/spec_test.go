package wire

import (
	"os"
	"strings"
	"testing"
)

// TestSpecStatesGuarantees: the protocol spec beside the code says what v2
// guarantees and what it does not, and names what the tests check.
func TestSpecStatesGuarantees(t *testing.T) {
	b, err := os.ReadFile("SPEC-v2.md")
	if err != nil {
		t.Fatal(err)
	}
	spec := string(b)
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
