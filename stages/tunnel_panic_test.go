package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"usocks/wire"
)

// panicConn panics in Read or Write, like a buggy frontend's connection.
type panicConn struct {
	net.Conn
	onRead, onWrite bool
}

func (c *panicConn) Read(p []byte) (int, error) {
	if c.onRead {
		panic("injected panic in Read")
	}
	return c.Conn.Read(p)
}

func (c *panicConn) Write(p []byte) (int, error) {
	if c.onWrite {
		panic("injected panic in Write")
	}
	return c.Conn.Write(p)
}

// panicFrontend panics while opening stream 1, gives stream 3 a target
// that panics when written to (the down pump) and stream 5 one that
// panics when read from (the up pump); other streams get an echo target.
type panicFrontend struct {
	wg sync.WaitGroup
}

func (fe *panicFrontend) Open(ctx context.Context, s StreamIO) (net.Conn, error) {
	if s.ID() == 1 {
		panic("injected panic in Open")
	}
	c, target := net.Pipe()
	fe.wg.Add(1)
	go func() {
		defer fe.wg.Done()
		if s.ID() > 5 {
			_, _ = io.Copy(target, target) // echo
		} else {
			<-ctx.Done()
		}
		_ = target.Close()
	}()
	switch s.ID() {
	case 3:
		return &panicConn{Conn: c, onWrite: true}, nil
	case 5:
		return &panicConn{Conn: c, onRead: true}, nil
	}
	return c, nil
}

// TestStreamPanicResetsOnlyThatStream: a panic in a frontend's Open, in
// the down pump (writing to the target) and in the up pump (reading from
// it) each reset their own stream with an RST and an error log carrying
// the stack; the session goes on, and a later stream echoes 200 KiB
// byte-exact.
func TestStreamPanicResetsOnlyThatStream(t *testing.T) {
	logger, hook := test.NewNullLogger()
	fe := &panicFrontend{}
	r := newDemuxRig(t, Server, &testFrontend{}, func(d *Demux) {
		d.Frontend = fe
		d.Log = logrus.NewEntry(logger)
	})
	defer func() {
		_ = r.stop()
		fe.wg.Wait()
	}()
	r.send(stf(wire.FlagSYN, 1, ""))
	r.send(stf(wire.FlagSYN, 3, ""))
	r.send(stf(wire.FlagDAT, 3, "to a target that panics"))
	r.send(stf(wire.FlagSYN, 5, ""))

	want := map[uint16]bool{1: true, 3: true, 5: true}
	timeout := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case f := <-r.control:
			if f.Type == wire.FrameStream && f.Flags == wire.FlagRST {
				if !want[f.Stream] {
					t.Errorf("unexpected RST for stream %d", f.Stream)
				}
				delete(want, f.Stream)
			}
			f.Release()
		case <-timeout:
			t.Fatalf("no RST for streams %v", want)
		}
	}

	// The session lives on: a new stream echoes, byte-exact.
	payload := make([]byte, 200<<10)
	rand.NewChaCha8([32]byte{7}).Read(payload)
	r.send(stf(wire.FlagSYN, 7, ""))
	for p := payload; len(p) > 0; {
		n := min(len(p), wire.MaxPayloadLen)
		r.send(wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 7, Payload: p[:n]})
		p = p[n:]
	}
	var echo bytes.Buffer
	for echo.Len() < len(payload) {
		select {
		case f := <-r.data:
			if f.Stream == 7 && f.Flags == wire.FlagDAT {
				echo.Write(f.Payload)
			}
			f.Release()
		case f := <-r.control:
			f.Release() // WINDOW updates
		case <-timeout:
			t.Fatalf("echoed %d of %d bytes", echo.Len(), len(payload))
		}
	}
	if sha256.Sum256(echo.Bytes()) != sha256.Sum256(payload) {
		t.Fatal("the echo differs from what was sent")
	}

	in := map[string]bool{}
	for _, e := range hook.AllEntries() {
		if e.Level != logrus.ErrorLevel {
			continue
		}
		stack, _ := e.Data["stack"].(string)
		if !strings.HasPrefix(e.Message, "panic in a stream") || !strings.Contains(stack, "panic") || !strings.Contains(stack, "stages.(*panic") {
			t.Errorf("error log %q without the panic's stack: %v", e.Message, e.Data)
		}
		in[e.Data["in"].(string)] = true
	}
	if !in["open"] || !in["up"] || !in["down"] || len(in) != 3 {
		t.Errorf("panics logged in %v, want open, up and down", in)
	}
}
