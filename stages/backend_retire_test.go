package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"testing"
	"time"
)

// Retire closed while a write is under way: the write completes, the
// socket is half-closed (the peer reads every byte, then EOF), and the
// writer returns nil; the socket still reads.
func TestBackendWriterRetire(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		early bool // Retire closed before the peer starts reading
	}{{"during a write", 32 << 20, false}, {"idle", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := tcpPair(t)
			in := make(chan Sealed, 1)
			retire := make(chan struct{})
			payload := bytes.Repeat([]byte("usocks retire "), tc.size/14)
			if len(payload) > 0 {
				in <- Sealed{B: payload}
			}
			w := &BackendWriter{Conn: c, In: in, Retire: retire, Log: testLog()}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			if tc.early {
				close(retire)
			} else {
				first := make([]byte, 1)
				if _, err := io.ReadFull(s, first); err != nil {
					t.Fatal(err)
				}
				close(retire) // the 32 MiB write cannot have finished: we read 1 byte
				payload = payload[1:]
			}
			_ = s.SetReadDeadline(time.Now().Add(10 * time.Second)) // a writer that ignores Retire never sends EOF
			got, err := io.ReadAll(s)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(got) != sha256.Sum256(payload) {
				t.Fatalf("peer read %d bytes, want the rest of the write (%d)", len(got), len(payload))
			}
			if err := <-done; err != nil {
				t.Fatalf("Run = %v, want nil", err)
			}
			// Half-closed, not closed: the other way still works.
			if _, err := s.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
				t.Fatalf("read after retire: %q, %v", b, err)
			}
		})
	}
}
