package capture

import (
	"testing"

	"usocks/wire"
)

// Every flags value reads back as written, named bits (MORE too) and
// unknown ones alike.
func TestParseFlagsRoundTrip(t *testing.T) {
	for i := 0; i < 256; i++ {
		f := wire.Flags(i)
		got, err := parseFlags(f.String())
		if err != nil || got != f {
			t.Errorf("parseFlags(%q) = %v, %v; want %v", f.String(), got, err, f)
		}
	}
	for _, bad := range []string{"", "DAT|", "MOR", "0x1ff", "dat"} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}
