package runner

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"usocks/runner/capture"
)

// TestCaptureResumedSession: both sides capture every link of a resumed
// session, not only its first connection. The resuming connection's
// capture has a link event (link 2 of session 1); replay carries the
// session's streams over to it (no "unknown stream" error for frames of a
// stream opened on the first link) and analyze counts the link.
func TestCaptureResumedSession(t *testing.T) {
	dir := t.TempDir()
	cpath, spath := filepath.Join(dir, "client.capture"), filepath.Join(dir, "server.capture")
	key := newKey(t)
	tn := resumeTunnel(t, "plain_tcp", func(o *tunnelOpts) {
		o.key, o.clientCapture, o.clientPlaintext, o.serverCapture, o.serverPlaintext = key, cpath, true, spath, true
	})
	downloadThroughOneCut(t, tn)
	tn.cancel()
	<-tn.done
	for _, path := range []string{cpath, spath} {
		name := filepath.Base(path)
		text, st := replayString(t, path, capture.ReplayOptions{Key: key, Stream: -1})
		if !strings.Contains(text, "link 2 of session 1 (resumed on this connection)") {
			t.Errorf("%s: no link 2 of session 1:\n%s", name, lastBytes([]byte(text), 3000))
		}
		// The cut link may end without CLOSE (an insecure close of that
		// connection); nothing else may be wrong.
		for _, l := range strings.Split(text, "\n") {
			if strings.Contains(l, "ERROR") && !strings.Contains(l, "insecure close") {
				t.Errorf("%s: %s", name, l)
			}
		}
		if st.Errors > 1 {
			t.Errorf("%s: %d errors", name, st.Errors)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		a, err := capture.Analyze(bytes.NewReader(raw), capture.DefaultMSS, capture.DefaultBurstGap)
		if err != nil {
			t.Fatal(err)
		}
		if a.Links != 1 || a.Sessions < 2 {
			t.Errorf("%s: analyze found %d connections, %d of them links; want the resumed link counted", name, a.Sessions, a.Links)
		}
		var out strings.Builder
		if err := a.WriteText(&out); err != nil || !strings.Contains(out.String(), "1 carry a later link of a resumed session") {
			t.Errorf("%s: analyze text does not show the link (%v):\n%s", name, err, out.String())
		}
	}
}
