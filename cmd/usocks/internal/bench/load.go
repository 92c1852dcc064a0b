package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"usocks/runner"
)

// opTimeout bounds one connect, and one exchange of a short workload.
const opTimeout = 10 * time.Second

// dial connects to addr (the tunnel's entry, or the target for direct TCP).
func dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: opTimeout}
	return d.DialContext(ctx, "tcp", addr)
}

// closeOnDone closes c when ctx is done; call the result to stop that.
func closeOnDone(ctx context.Context, c net.Conn) func() bool {
	return context.AfterFunc(ctx, func() { _ = c.Close() })
}

// openEcho dials addr and starts an echo: it sends the mode byte and reads
// it back, so the stream is known to reach the target.
func openEcho(ctx context.Context, addr string) (net.Conn, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(opTimeout))
	b := [1]byte{ModeEcho}
	if _, err := c.Write(b[:]); err != nil {
		_ = c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("echo of the first byte: %w", err)
	}
	if b[0] != ModeEcho {
		_ = c.Close()
		return nil, fmt.Errorf("echo of the first byte: got %#x", b[0])
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// BulkUp sends data to the sink for d, ends it with an empty frame, and
// waits for the sink's byte count: the rate covers every byte arriving.
func BulkUp(ctx context.Context, addr string, d time.Duration) (float64, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	defer closeOnDone(ctx, c)()
	_ = c.SetDeadline(time.Now().Add(d + opTimeout*3))
	// Each write is one frame: a length, then ioBuf bytes.
	buf := make([]byte, 4+ioBuf)
	runner.Pattern(buf[4:], 7)
	binary.BigEndian.PutUint32(buf, ioBuf)
	start := time.Now()
	if _, err := c.Write([]byte{ModeSink}); err != nil {
		return 0, err
	}
	var sent int64
	for time.Since(start) < d {
		if _, err := c.Write(buf); err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", sent, err)
		}
		sent += ioBuf
	}
	if _, err := c.Write(make([]byte, 4)); err != nil {
		return 0, fmt.Errorf("after %d bytes: %w", sent, err)
	}
	var ans [8]byte
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		return 0, fmt.Errorf("reading the sink's count: %w", err)
	}
	el := time.Since(start)
	if got := int64(binary.BigEndian.Uint64(ans[:])); got != sent {
		return 0, fmt.Errorf("sent %d bytes, the sink got %d", sent, got)
	}
	return Gbps(sent, el), nil
}

// BulkDown asks the source for d of data and reads it to EOF.
func BulkDown(ctx context.Context, addr string, d time.Duration) (float64, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	defer closeOnDone(ctx, c)()
	_ = c.SetDeadline(time.Now().Add(d + opTimeout*3))
	var req [9]byte
	req[0] = ModeSource
	binary.BigEndian.PutUint64(req[1:], uint64(d))
	start := time.Now()
	if _, err := c.Write(req[:]); err != nil {
		return 0, err
	}
	buf := make([]byte, ioBuf)
	var got int64
	for {
		n, err := c.Read(buf)
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", got, err)
		}
	}
	el := time.Since(start)
	if got == 0 {
		return 0, errors.New("no data")
	}
	return Gbps(got, el), nil
}

// RoundTrips sends count messages of size bytes, one at a time, on one
// echo connection, and returns each round trip's time, sorted. A tunnel
// that paces its traffic (a defence policy) may not get through count in
// limit: the round trips done by then are the result if there are at
// least MinRoundTrips of them (fewer than count says so), an error
// otherwise.
func RoundTrips(ctx context.Context, addr string, count, size int, limit time.Duration) ([]time.Duration, error) {
	c, err := openEcho(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	defer closeOnDone(ctx, c)()
	end := time.Now().Add(limit)
	// The deadline ends a round trip still under way at the limit; it
	// does not count.
	_ = c.SetDeadline(end)
	msg := make([]byte, size)
	runner.Pattern(msg, 3)
	back := make([]byte, size)
	lat := make([]time.Duration, 0, min(count, 1<<16)) // a count far above what fits in limit allocates nothing for it
	for i := 0; i < count; i++ {
		msg[0] = byte(i)
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		if _, err := c.Write(msg); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return nil, fmt.Errorf("round trip %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, back); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return nil, fmt.Errorf("round trip %d: %w", i, err)
		}
		lat = append(lat, time.Since(t0))
		if !bytes.Equal(msg, back) {
			return nil, fmt.Errorf("round trip %d: echo differs", i)
		}
	}
	if len(lat) < count && len(lat) < MinRoundTrips {
		return nil, fmt.Errorf("%d of %d round trips in %v (at least %d make a figure)", len(lat), count, limit, MinRoundTrips)
	}
	slices.Sort(lat)
	return lat, nil
}

// MinRoundTrips is the fewest round trips that make a latency figure when
// the time limit ends the workload early.
const MinRoundTrips = 200

// ConnectResult is one run of Connects.
type ConnectResult struct {
	Done    int             // streams that completed
	Failed  int             // streams that failed
	FirstEr error           // the first failure
	Elapsed time.Duration   // the whole run
	Latency []time.Duration // connect to first echo, sorted
}

// Connects runs conc workers for d, each repeating: connect, send one
// byte, read its echo (the latency), read the target's close, close. A
// worker stops after 100 failures.
func Connects(ctx context.Context, addr string, conc int, d time.Duration) ConnectResult {
	var mu sync.Mutex
	var res ConnectResult
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			var lat []time.Duration
			failed := 0
			var first error
			for time.Now().Before(end) && failed < 100 && ctx.Err() == nil {
				d, err := once(ctx, addr)
				if err != nil {
					failed++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, d)
			}
			mu.Lock()
			res.Latency = append(res.Latency, lat...)
			res.Failed += failed
			if res.FirstEr == nil {
				res.FirstEr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Done = len(res.Latency)
	slices.Sort(res.Latency)
	return res
}

// once is one stream of Connects: it returns the time from the start of
// the connect to the echo of the first byte.
func once(ctx context.Context, addr string) (time.Duration, error) {
	return openOnce(ctx, addr, nil, true)
}

// openOnce connects to addr, runs hello on the connection if set (a proxy
// handshake), sends ModeOnce and returns the time from the start of the
// connect to its echo; with waitClose it then waits for the target's
// close.
func openOnce(ctx context.Context, addr string, hello func(net.Conn) error, waitClose bool) (time.Duration, error) {
	t0 := time.Now()
	c, err := dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(opTimeout))
	if hello != nil {
		if err := hello(c); err != nil {
			return 0, err
		}
	}
	b := [1]byte{ModeOnce}
	if _, err := c.Write(b[:]); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("echo: %w", err)
	}
	d := time.Since(t0)
	if b[0] != ModeOnce {
		return 0, fmt.Errorf("echo: got %#x", b[0])
	}
	if !waitClose {
		return d, nil
	}
	if n, err := c.Read(b[:]); err != io.EOF {
		return 0, fmt.Errorf("waiting for the close: read %d bytes, %v", n, err)
	}
	return d, nil
}

// Payloads are the pattern data of the concurrent-streams workload and
// their SHA-256 digests, made once before any timing.
type Payloads struct {
	Data   [][]byte
	Digest [][sha256.Size]byte
}

// NewPayloads makes n payloads of size bytes, each from its own seed.
func NewPayloads(n, size int) *Payloads {
	p := &Payloads{Data: make([][]byte, n), Digest: make([][sha256.Size]byte, n)}
	for i := range n {
		p.Data[i] = make([]byte, size)
		runner.Pattern(p.Data[i], uint64(i)+1)
		p.Digest[i] = sha256.Sum256(p.Data[i])
	}
	return p
}

// ManyResult is one run of Many.
type ManyResult struct {
	Elapsed time.Duration
	Sent    int64 // payload bytes sent
	Lost    int64 // payload bytes that did not come back
	Bad     int   // streams whose echo was short, long, wrong or failed
	FirstEr error // the first bad stream's error
}

// Many echoes every payload on its own stream, all at once, through addr,
// checking each echo's length and SHA-256 digest.
func Many(ctx context.Context, addr string, p *Payloads, limit time.Duration) ManyResult {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var res ManyResult
	var lost atomic.Int64
	var mu sync.Mutex
	fail := func(i int, err error) {
		mu.Lock()
		res.Bad++
		if res.FirstEr == nil {
			res.FirstEr = fmt.Errorf("stream %d: %w", i, err)
		}
		mu.Unlock()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i, data := range p.Data {
		res.Sent += int64(len(data))
		wg.Go(func() {
			got, err := echoCheck(ctx, addr, data, p.Digest[i])
			if got < int64(len(data)) {
				lost.Add(int64(len(data)) - got)
			}
			if err != nil {
				fail(i, err)
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Lost = lost.Load()
	return res
}

// echoCheck is runner.EchoCheck with the payload made beforehand and the
// target's mode byte: it sends data, reads as many bytes back and compares
// their SHA-256 digest. It returns the payload bytes echoed. It reads a
// known length rather than to EOF after a half-close, since
// shadowsocks-libev does not carry a half-close.
func echoCheck(ctx context.Context, addr string, data []byte, want [sha256.Size]byte) (int64, error) {
	c, err := dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	defer closeOnDone(ctx, c)()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte{ModeEcho})
		if err == nil {
			_, err = c.Write(data)
		}
		werr <- err
	}()
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		_ = c.Close()
		<-werr
		return 0, fmt.Errorf("read: %w", err)
	}
	h := sha256.New()
	got, rerr := io.CopyN(h, c, int64(len(data)))
	if rerr != nil {
		_ = c.Close()
	}
	if err := <-werr; err != nil {
		return got, fmt.Errorf("write: %w", err)
	}
	if rerr != nil {
		return got, fmt.Errorf("read after %d of %d bytes: %w", got, len(data), rerr)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if mode[0] != ModeEcho || sum != want {
		return 0, fmt.Errorf("%w: %d bytes with a different SHA-256", runner.ErrEchoMismatch, got)
	}
	return got, nil
}

// HoldIdle opens n echo streams (conc at a time), each checked with a
// one-byte echo, and returns them open. On error it closes what it opened.
func HoldIdle(ctx context.Context, addr string, n, conc int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := openEcho(ctx, addr)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("stream %d of %d: %w", i+1, n, err)
					}
					mu.Unlock()
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	if first != nil {
		closeAll(conns)
		return nil, first
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			_ = c.Close()
		}
	}
}
