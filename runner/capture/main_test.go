package capture

import (
	"bytes"
	"flag"
	"io"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// update regenerates the golden listings in testdata/captures; the
// captures themselves are made by a real tunnel in the runner package
// (TestGenerateCaptures there).
var update = flag.Bool("update", false, "regenerate the golden listings of testdata/captures")

// Fixed test keys of the committed captures (public: tests only; the
// same as in the runner package's tests).
const (
	captureTestKeyV2 = "dXNvY2tzIGNhcHR1cmUgdGVzdCBrZXkgKHB1YmxpYyk=" // "usocks capture test key (public)"
	captureTestKeyV1 = "usocks v1 capture test key (public)"
)

const capturesDir = "../../testdata/captures"

// replayString replays a file into a string.
func replayString(t testing.TB, path string, o ReplayOptions) (string, ReplayStats) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	st, err := Replay(f, &out, o)
	if err != nil {
		t.Fatalf("replay %s: %v", path, err)
	}
	return out.String(), st
}

func replayReader(t testing.TB, r io.Reader, o ReplayOptions) (string, ReplayStats) {
	t.Helper()
	var out bytes.Buffer
	st, err := Replay(r, &out, o)
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), st
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
