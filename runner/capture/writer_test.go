package capture

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestCaptureDropsWhenFull: a full queue drops and counts, never blocks.
func TestCaptureDropsWhenFull(t *testing.T) {
	pr, pw := io.Pipe()
	c := NewWriter(pw, "v2", "client", false, 0)
	// Nobody reads the pipe: the writer goroutine blocks on its first
	// flush, and the queue fills.
	s := c.Session("peer")
	chunk := make([]byte, 1<<20)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 2*queueLen; i++ {
			s.backendIn(chunk[:1000+i%100])
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("taps blocked on a full capture queue")
	}
	if c.Dropped() == 0 {
		t.Fatal("no drops counted")
	}
	var out bytes.Buffer
	readDone := make(chan struct{})
	go func() { _, _ = io.Copy(&out, pr); close(readDone) }()
	for deadline := time.Now().Add(10 * time.Second); len(c.ch) > 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("the queue does not drain")
		}
	}
	s.backendIn([]byte("after")) // writes the drop count first
	s.End(nil)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	<-readDone
	if !strings.Contains(out.String(), " drop n=") {
		t.Fatal("no drop event written")
	}
	rep, st := replayReader(t, &out, ReplayOptions{Stream: -1, NoTime: true})
	if st.Dropped == 0 || !strings.Contains(rep, "lost here") {
		t.Fatalf("replay does not report the drops:\n%s", tail([]byte(rep)))
	}
}

// A capture stops growing at its size cap; the closing line counts what
// was dropped.
func TestCaptureSizeCap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cap")
	c, err := Open(path, "v2", "client", false, 4096)
	if err != nil {
		t.Fatal(err)
	}
	sc := c.Session("127.0.0.1:1")
	for i := 0; i < 200; i++ {
		sc.backendIn(make([]byte, 100))
	}
	sc.End(nil)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 4096+1024 {
		t.Fatalf("capture of %d bytes with a 4 KiB cap", fi.Size())
	}
	if c.Dropped() == 0 {
		t.Fatal("nothing counted as dropped")
	}
}
