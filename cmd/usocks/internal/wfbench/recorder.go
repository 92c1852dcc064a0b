package wfbench

import (
	"errors"
	"io"
	"net"
	"sort"
	"sync"
	"time"
)

// MSS is the TCP payload of one full segment on a 1500-byte-MTU link
// (1500 − 20 IPv4 − 20 TCP − 12 timestamp option).
const MSS = 1448

// HeaderBytes is what each segment adds on the wire (IPv4, TCP with the
// timestamp option); wire-byte totals count it.
const HeaderBytes = 52

// Packet is one segment the observer saw: its time since the recorder
// started and its payload size, positive from client to server
// (outgoing), negative from server to client (incoming).
type Packet struct {
	T    time.Duration
	Size int32
}

// Link shapes the recorder's link.
type Link struct {
	Name string
	// RateMbit limits each direction to this many Mbit/s (0: unshaped).
	RateMbit float64
	// Delay is the one-way propagation delay.
	Delay time.Duration
}

// tailWait is how long the recorder holds a read's short tail for more
// data before it counts it as a segment of its own. A sender's TCP stack
// with Nagle off sends full segments while a write lasts and a short one
// only where the write ends; a relay cannot see where writes end, so a
// read followed at once by more data is taken as the middle of a write.
const tailWait = 2 * time.Millisecond

// queuePackets bounds the segments waiting at a shaped link's
// bottleneck; when it is full the recorder stops reading, and TCP's flow
// control pushes back on the sender.
const queuePackets = 64

// Recorder is the on-path observer: a TCP relay between the tunnel
// client's backend and the tunnel server. It cuts the byte stream into
// segments of at most MSS bytes as a 1500-MTU TCP link would (see
// tailWait), optionally
// shapes them (rate, delay), and records time, direction and size of
// each. The observer sits at the client end of the link: it sees
// outgoing segments as they leave the bottleneck and incoming ones as
// they arrive.
type Recorder struct {
	link  Link
	to    string
	ln    net.Listener
	start time.Time

	mu      sync.Mutex
	packets []Packet
	sorted  bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// StartRecorder listens on a fresh loopback port and relays each
// connection to addr.
func StartRecorder(addr string, link Link) (*Recorder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Recorder{link: link, to: addr, ln: ln, start: time.Now(), conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is where the tunnel client connects.
func (r *Recorder) Addr() string { return r.ln.Addr().String() }

// Port is Addr's port.
func (r *Recorder) Port() int { return r.ln.Addr().(*net.TCPAddr).Port }

// Close stops the relay and its connections.
func (r *Recorder) Close() {
	_ = r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Since is t on the recorder's clock.
func (r *Recorder) Since(t time.Time) time.Duration { return t.Sub(r.start) }

// Window returns the packets seen in [from, to], times relative to from.
func (r *Recorder) Window(from, to time.Duration) []Packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Shaped directions record in their own order; sort by time.
	if !r.sorted {
		sort.SliceStable(r.packets, func(i, j int) bool { return r.packets[i].T < r.packets[j].T })
		r.sorted = true
	}
	lo := sort.Search(len(r.packets), func(i int) bool { return r.packets[i].T >= from })
	var out []Packet
	for _, p := range r.packets[lo:] {
		if p.T > to {
			break
		}
		out = append(out, Packet{p.T - from, p.Size})
	}
	return out
}

// WireBytes is every byte on the link so far, headers included.
func (r *Recorder) WireBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return wireBytes(r.packets)
}

func wireBytes(ps []Packet) int64 {
	var n int64
	for _, p := range ps {
		n += int64(abs32(p.Size)) + HeaderBytes
	}
	return n
}

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}

func (r *Recorder) record(t time.Time, size int, sign int32) {
	r.mu.Lock()
	r.packets = append(r.packets, Packet{t.Sub(r.start), sign * int32(size)})
	r.sorted = false
	r.mu.Unlock()
}

func (r *Recorder) track(c net.Conn, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.conns[c] = struct{}{}
	} else {
		delete(r.conns, c)
	}
}

func (r *Recorder) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.relay(c)
		}()
	}
}

func (r *Recorder) relay(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", r.to)
	if err != nil {
		return
	}
	defer s.Close()
	r.track(c, true)
	r.track(s, true)
	defer r.track(c, false)
	defer r.track(s, false)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.pump(c, s, 1) }()
	go func() { defer wg.Done(); r.pump(s, c, -1) }()
	wg.Wait()
}

type segment struct {
	b  []byte
	at time.Time // when it left the bottleneck, then when it arrives
}

// pump moves one direction: read → segments → bottleneck (rate) →
// delay line → write. Outgoing (sign 1) segments are recorded as they
// leave the bottleneck, incoming ones as they arrive.
func (r *Recorder) pump(src, dst net.Conn, sign int32) {
	defer func() {
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	shaped := r.link.RateMbit > 0 || r.link.Delay > 0
	var queue chan segment
	if shaped {
		queue = make(chan segment, queuePackets)
		line := make(chan segment, 8192)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); r.bottleneck(queue, line, sign) }()
		go func() { defer wg.Done(); r.deliver(line, dst, src, sign) }()
		defer wg.Wait()
		defer close(queue)
	}
	emit := func(b []byte) {
		if shaped {
			queue <- segment{b: b}
		} else {
			r.record(time.Now(), len(b), sign)
		}
	}
	var carry []byte // the short tail of the last read, held back
	for {
		deadline := time.Time{}
		if len(carry) > 0 {
			deadline = time.Now().Add(tailWait)
		}
		_ = src.SetReadDeadline(deadline)
		buf := make([]byte, 64<<10)
		n, err := src.Read(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			emit(carry) // the sender's write ended: a short segment
			carry = nil
			continue
		}
		if n > 0 && !shaped {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				_ = src.Close()
				return
			}
		}
		data := append(carry, buf[:n]...)
		full := len(data) - len(data)%MSS
		for off := 0; off < full; off += MSS {
			emit(data[off : off+MSS])
		}
		carry = append([]byte(nil), data[full:]...)
		if err != nil {
			if len(carry) > 0 {
				emit(carry)
			}
			if !errors.Is(err, io.EOF) {
				_ = dst.Close()
			}
			return
		}
	}
}

// bottleneck serialises segments at the link rate: each leaves when the
// previous one has been sent.
func (r *Recorder) bottleneck(queue <-chan segment, line chan<- segment, sign int32) {
	defer close(line)
	var free time.Time // when the link is next idle
	for s := range queue {
		now := time.Now()
		at := now
		if r.link.RateMbit > 0 {
			if free.After(at) {
				at = free
			}
			tx := time.Duration(float64(len(s.b)+HeaderBytes) * 8 / (r.link.RateMbit * 1e6) * float64(time.Second))
			free = at.Add(tx)
			at = free
			if d := at.Sub(now); d > time.Millisecond {
				time.Sleep(d)
			}
		}
		if sign > 0 {
			r.record(at, len(s.b), sign)
		}
		s.at = at.Add(r.link.Delay)
		line <- s
	}
}

// deliver writes segments when they arrive, coalescing those due.
func (r *Recorder) deliver(line <-chan segment, dst, src net.Conn, sign int32) {
	var batch []byte
	failed := false
	for s := range line {
		if d := time.Until(s.at); d > 200*time.Microsecond {
			time.Sleep(d)
		}
		if sign < 0 {
			r.record(s.at, len(s.b), sign)
		}
		if failed {
			continue // drain so the bottleneck never blocks
		}
		batch = append(batch[:0], s.b...)
		for more := true; more; {
			select {
			case n, ok := <-line:
				if !ok {
					more = false
					break
				}
				if d := time.Until(n.at); d > 200*time.Microsecond {
					time.Sleep(d)
				}
				if sign < 0 {
					r.record(n.at, len(n.b), sign)
				}
				batch = append(batch, n.b...)
				if len(batch) >= 64<<10 {
					more = false
				}
			default:
				more = false
			}
		}
		if _, err := dst.Write(batch); err != nil {
			failed = true
			_ = src.Close()
		}
	}
}
