package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"usocks/runner"
	"usocks/stages"
)

// The first byte a load generator sends on a connection to the target picks
// what the target does with it.
const (
	// ModeEcho: write back every byte, this one included; half-close on EOF.
	ModeEcho = 'E'
	// ModeOnce: write back this byte, then close. The target closes
	// first, so the TIME_WAIT state of the many short connections of the
	// new-streams workload stays on listening ports and does not use up
	// ephemeral ports.
	ModeOnce = 'C'
	// ModeSink: read frames (a 4-byte big-endian length, at most
	// MaxFrame, then that many bytes) up to an empty one, then answer the
	// bytes received in frames (8 bytes, big endian) and close. Frames
	// rather than EOF end the upload since shadowsocks-libev does not carry
	// a half-close.
	ModeSink = 'U'
	// ModeSource: read an 8-byte big-endian duration in nanoseconds, send
	// data for that long (at most MaxSourceTime), then close.
	ModeSource = 'D'
)

// MaxFrame bounds one ModeSink frame.
const MaxFrame = 1 << 20

// MaxSourceTime bounds one ModeSource connection.
const MaxSourceTime = time.Minute

const ioBuf = 64 << 10

// Target is the bench's target server: an echo, sink and source on one
// port (see ModeEcho, ModeSink, ModeSource).
type Target struct {
	ln      net.Listener
	connMax time.Duration
	wg      sync.WaitGroup
	data    []byte
}

// NewTarget serves on ln; every connection is closed after connMax.
func NewTarget(ln net.Listener, connMax time.Duration) *Target {
	t := &Target{ln: ln, connMax: connMax, data: make([]byte, ioBuf)}
	runner.Pattern(t.data, 42)
	return t
}

// Serve accepts until ctx is done or the listener fails, then closes the
// listener and every open connection and waits for them.
func (t *Target) Serve(ctx context.Context) error {
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	stop := context.AfterFunc(ctx, func() {
		_ = t.ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = t.ln.Accept()
		if err != nil {
			break
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			_ = c.Close()
			break
		}
		conns[c] = struct{}{}
		mu.Unlock()
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.handle(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
	_ = t.ln.Close()
	t.wg.Wait()
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (t *Target) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(t.connMax))
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case ModeEcho:
		if _, err := c.Write(mode[:]); err != nil {
			return
		}
		buf := make([]byte, ioBuf)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				break
			}
		}
		_ = stages.CloseWrite(c)
	case ModeOnce:
		_, _ = c.Write(mode[:])
	case ModeSink:
		buf := make([]byte, ioBuf)
		var total uint64
		var hdr [4]byte
		for {
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			n := int64(binary.BigEndian.Uint32(hdr[:]))
			if n == 0 {
				break
			}
			if n > MaxFrame {
				return
			}
			got, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf)
			total += uint64(got)
			if err != nil || got != n {
				return
			}
		}
		var ans [8]byte
		binary.BigEndian.PutUint64(ans[:], total)
		_, _ = c.Write(ans[:])
	case ModeSource:
		var req [8]byte
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		d := min(time.Duration(binary.BigEndian.Uint64(req[:])), MaxSourceTime)
		start := time.Now()
		for time.Since(start) < d {
			if _, err := c.Write(t.data); err != nil {
				return
			}
		}
		_ = stages.CloseWrite(c)
	}
}

// RunTarget is `usocks bench target`: it listens (default 127.0.0.1:0),
// prints the address it got as one line on stdout and serves until ctx is
// done or --max-time has passed.
func RunTarget(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench target", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	maxTime := fs.Duration("max-time", 10*time.Minute, "exit after this long")
	connMax := fs.Duration("conn-timeout", 5*time.Minute, "close each connection after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkLoopback(*listen); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(stdout, ln.Addr().String()); err != nil {
		_ = ln.Close()
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *maxTime)
	defer cancel()
	return NewTarget(ln, *connMax).Serve(ctx)
}

// checkLoopback refuses any listen address but a loopback one.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: the bench only uses loopback addresses", hostport)
	}
	return nil
}
