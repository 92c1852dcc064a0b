package frontend

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
)

// UDP associations (SPEC-v2.md §6a). A SOCKS5 UDP ASSOCIATE travels in a
// stream; its datagrams travel as DATAGRAM frames on that stream's id.
//
//	app ─UDP─► client UDPRelay ─DATAGRAM─► demux ─► stream.dgrams ─► association ─UDP─► target
//	app ◄─UDP─ client UDPRelay ◄─ demux ◄─DATAGRAM─ stream.SendDatagram ◄─ association ◄─UDP─ target
//
// Datagrams are droppable: every queue on their way is bounded and a full
// queue drops (and counts) rather than waits.

// UDPHeader is the RFC 1928 UDP request header.
type UDPHeader struct {
	Frag byte
	Host string // IP in text form, or a name
	Port uint16
}

// ErrBadDatagram is a datagram whose header cannot be parsed.
var ErrBadDatagram = errors.New("socks5: malformed UDP datagram")

// ParseUDPDatagram splits a SOCKS5 UDP datagram into header and data.
func ParseUDPDatagram(p []byte) (UDPHeader, []byte, error) {
	var h UDPHeader
	if len(p) < 4 || p[0] != 0 || p[1] != 0 {
		return h, nil, ErrBadDatagram
	}
	h.Frag = p[2]
	atyp, p := p[3], p[4:]
	switch atyp {
	case SocksAtypIPv4:
		if len(p) < 4+2 {
			return h, nil, ErrBadDatagram
		}
		h.Host = netip.AddrFrom4([4]byte(p[:4])).String()
		p = p[4:]
	case SocksAtypIPv6:
		if len(p) < 16+2 {
			return h, nil, ErrBadDatagram
		}
		h.Host = netip.AddrFrom16([16]byte(p[:16])).String()
		p = p[16:]
	case SocksAtypDomain:
		if len(p) < 1 || len(p) < 1+int(p[0])+2 || p[0] == 0 {
			return h, nil, ErrBadDatagram
		}
		h.Host = string(p[1 : 1+p[0]])
		if !validHost(h.Host) {
			return h, nil, ErrBadDatagram
		}
		p = p[1+p[0]:]
	default:
		return h, nil, ErrBadDatagram
	}
	h.Port = binary.BigEndian.Uint16(p[:2])
	return h, p[2:], nil
}

// AppendUDPDatagram encodes a datagram from addr with data.
func AppendUDPDatagram(b []byte, from netip.AddrPort, data []byte) []byte {
	b = append(b, 0, 0, 0)
	a := from.Addr().Unmap()
	if a.Is4() {
		a4 := a.As4()
		b = append(append(b, SocksAtypIPv4), a4[:]...)
	} else {
		a16 := a.As16()
		b = append(append(b, SocksAtypIPv6), a16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, from.Port())
	return append(b, data...)
}

// association is the server side of one UDP ASSOCIATE: a UDP socket of
// its own, fed from the stream's datagrams, answering through them.
type association struct {
	s         stages.DatagramStream
	in        <-chan []byte
	pc        *net.UDPConn
	dialer    *Dialer
	refuse443 bool
	log       *logrus.Entry
	stats     *UDPStats
	release   func() // gives the socket back to the session's Gate

	// peers are the destinations the app sent to: only their replies
	// reach it (address-dependent filtering, not full cone: a stranger
	// who learns the socket's port cannot inject datagrams).
	mu    sync.Mutex
	peers map[netip.AddrPort]struct{}
}

// maxAssocPeers bounds the destinations of one association; datagrams to
// more are refused.
const maxAssocPeers = 1024

// addPeer records dst as a destination; false when the association has
// too many.
func (a *association) addPeer(dst netip.AddrPort) bool {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.peers == nil {
		a.peers = make(map[netip.AddrPort]struct{})
	}
	if _, ok := a.peers[dst]; ok {
		return true
	}
	if len(a.peers) >= maxAssocPeers {
		return false
	}
	a.peers[dst] = struct{}{}
	return true
}

func (a *association) isPeer(from netip.AddrPort) bool {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.peers[from]
	return ok
}

// UDPStats counts datagrams of a frontend's associations.
type UDPStats struct {
	Sent, Received, Refused, Dropped atomic.Int64
}

// run moves datagrams until ctx ends or the stream's datagram channel is
// gone; it closes the socket.
func (a *association) run(ctx context.Context) {
	if a.release != nil {
		defer a.release()
	}
	defer a.pc.Close()
	go a.replies()
	for {
		var p []byte
		select {
		case p = <-a.in:
		case <-ctx.Done():
			return
		}
		h, data, err := ParseUDPDatagram(p)
		if err != nil || h.Frag != 0 {
			a.stats.Dropped.Add(1) // fragments are not supported (RFC 1928 allows dropping)
			continue
		}
		if a.refuse443 && h.Port == 443 {
			a.stats.Refused.Add(1) // no QUIC: browsers fall back to TCP
			continue
		}
		dst, err := a.dialer.Resolve(ctx, h.Host, h.Port)
		if err != nil {
			a.stats.Refused.Add(1)
			a.log.WithError(err).Debug("udp datagram refused")
			continue
		}
		if !a.addPeer(dst) {
			a.stats.Refused.Add(1)
			continue
		}
		if _, err := a.pc.WriteToUDPAddrPort(data, dst); err == nil {
			a.stats.Sent.Add(1)
		}
	}
}

// replies reads answers from targets and sends them to the app.
func (a *association) replies() {
	buf := make([]byte, stages.MaxDatagram)
	out := make([]byte, 0, stages.MaxDatagram+32)
	for {
		n, from, err := a.pc.ReadFromUDPAddrPort(buf[:stages.MaxDatagram-32])
		if err != nil {
			return
		}
		if !a.isPeer(from) {
			a.stats.Dropped.Add(1) // not a destination the app sent to
			continue
		}
		out = AppendUDPDatagram(out[:0], from, buf[:n])
		if a.s.SendDatagram(out) {
			a.stats.Received.Add(1)
		} else {
			a.stats.Dropped.Add(1)
		}
	}
}

// assocConn stands for the TCP side of an association: the stream stays
// open while the app keeps its control connection. Reads end (EOF) when the
// app closes it; writes (the app has nothing to say) are discarded.
type assocConn struct {
	done    chan struct{}
	once    sync.Once
	onClose func()
}

func newAssocConn(onClose func()) *assocConn {
	return &assocConn{done: make(chan struct{}), onClose: onClose}
}

func (c *assocConn) Read([]byte) (int, error) {
	<-c.done
	return 0, io.EOF
}
func (c *assocConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *assocConn) CloseWrite() error           { c.end(); return nil }
func (c *assocConn) Close() error                { c.end(); return nil }
func (c *assocConn) end() {
	c.once.Do(func() {
		close(c.done)
		c.onClose()
	})
}
func (c *assocConn) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (c *assocConn) RemoteAddr() net.Addr             { return &net.UDPAddr{} }
func (c *assocConn) SetDeadline(time.Time) error      { return nil }
func (c *assocConn) SetReadDeadline(time.Time) error  { return nil }
func (c *assocConn) SetWriteDeadline(time.Time) error { return nil }

// UDPRelay is the client's UDP socket for associations: apps send their
// SOCKS5 UDP datagrams here (the address the client's SOCKS reply names),
// and it forwards them as DATAGRAM frames of the matching stream. An app
// source address is matched to an association by the first datagram it
// sends: the oldest open association of a stream whose app connection came
// from the same IP claims it (RFC 1928 leaves the matching to the server).
type UDPRelay struct {
	conn *net.UDPConn
	log  *logrus.Entry

	mu     sync.Mutex
	assocs map[uint16]*relayAssoc
	bySrc  map[netip.AddrPort]*relayAssoc
	order  []uint16 // association ids, oldest first

	// out holds datagrams for apps until Run's writer sends them, so
	// that Deliver (called by the demux) never waits on the socket.
	out chan relayOut
}

type relayOut struct {
	dst netip.AddrPort
	p   []byte
}

type relayAssoc struct {
	id    uint16
	appIP netip.Addr
	want  netip.AddrPort // the ASSOCIATE request's address (zero parts: any)
	src   netip.AddrPort // the app's UDP address, once known
	send  func([]byte) bool
}

// NewUDPRelay wraps a bound UDP socket.
func NewUDPRelay(conn *net.UDPConn, log *logrus.Entry) *UDPRelay {
	return &UDPRelay{conn: conn, log: log, assocs: map[uint16]*relayAssoc{}, bySrc: map[netip.AddrPort]*relayAssoc{},
		out: make(chan relayOut, stages.DatagramQueueLen)}
}

// Addr is where apps send datagrams.
func (r *UDPRelay) Addr() netip.AddrPort { return r.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Open registers the association of stream id, whose app connected from
// appIP, if what the app sent on the stream is a SOCKS5 UDP ASSOCIATE
// (else nil: a TCP stream gets no reply injected); send forwards a
// datagram into the tunnel. The reply is the SOCKS5 UDP ASSOCIATE success
// naming the relay (the client answers the app itself: only it knows the
// relay's address). A second Open of the same id replaces the first.
func (r *UDPRelay) Open(id uint16, appIP netip.Addr, sent []byte, send func([]byte) bool) []byte {
	want, ok := associateRequest(sent)
	if !ok {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeLocked(id)
	r.assocs[id] = &relayAssoc{id: id, appIP: appIP.Unmap(), want: want, send: send}
	r.order = append(r.order, id)
	return AppendSocksReply(nil, SocksSucceeded, r.Addr())
}

// Close forgets the association of stream id.
func (r *UDPRelay) Close(id uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeLocked(id)
}

func (r *UDPRelay) closeLocked(id uint16) {
	a := r.assocs[id]
	if a == nil {
		return
	}
	delete(r.assocs, id)
	if a.src.IsValid() {
		delete(r.bySrc, a.src)
	}
	for i, o := range r.order {
		if o == id {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
}

// associateRequest parses what an app sent on a stream: a SOCKS5 greeting,
// an optional username/password, and a UDP ASSOCIATE request, exactly.
// want is the request's DST.ADDR and DST.PORT: where the app says it will
// send from (zero parts: not given).
func associateRequest(sent []byte) (want netip.AddrPort, ok bool) {
	r := bytes.NewReader(sent)
	if _, err := readSocksGreeting(r); err != nil {
		return want, false
	}
	if b, err := r.ReadByte(); err != nil {
		return want, false
	} else if _ = r.UnreadByte(); b == socksUserPassVersion {
		if _, _, err := readSocksUserPass(r); err != nil {
			return want, false
		}
	}
	req, err := readSocksRequest(r)
	if err != nil || req.Cmd != SocksCmdUDPAssociate || r.Len() != 0 {
		return want, false
	}
	ip, err := netip.ParseAddr(req.Host)
	if err != nil {
		ip = netip.Addr{} // a name: no address given
	}
	return netip.AddrPortFrom(ip.Unmap(), req.Port), true
}

// matches says whether a datagram from src may claim association a: its
// app's IP, and the address its request gave, where given.
func (a *relayAssoc) matches(src netip.AddrPort) bool {
	if a.src.IsValid() || a.appIP != src.Addr() {
		return false
	}
	if ip := a.want.Addr(); ip.IsValid() && !ip.IsUnspecified() && ip != src.Addr() {
		return false
	}
	return a.want.Port() == 0 || a.want.Port() == src.Port()
}

// Deliver queues a datagram from the tunnel for the app of stream id; it
// never blocks: a full queue, or an app whose address is not known yet,
// drops the datagram.
func (r *UDPRelay) Deliver(id uint16, p []byte) {
	r.mu.Lock()
	a := r.assocs[id]
	var dst netip.AddrPort
	if a != nil {
		dst = a.src
	}
	r.mu.Unlock()
	if !dst.IsValid() {
		return
	}
	select {
	case r.out <- relayOut{dst, append([]byte(nil), p...)}:
	default:
		r.log.WithField("to", dst.String()).Debug("udp datagram dropped")
	}
}

// Run forwards the apps' datagrams until the socket is closed, and writes
// what Deliver queued.
func (r *UDPRelay) Run() {
	done := make(chan struct{})
	written := make(chan struct{})
	go func() {
		defer close(written)
		for {
			select {
			case o := <-r.out:
				_, _ = r.conn.WriteToUDPAddrPort(o.p, o.dst)
			case <-done:
				return
			}
		}
	}()
	defer func() { close(done); <-written }()
	buf := make([]byte, stages.MaxDatagram)
	for {
		n, src, err := r.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		r.forward(netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), buf[:n])
	}
}

// forward sends one datagram from an app into its association's stream.
// A panic here would end the client: it is logged and the datagram dropped.
func (r *UDPRelay) forward(src netip.AddrPort, p []byte) {
	defer func() {
		if v := recover(); v != nil {
			r.log.WithField("panic", v).Error("udp relay: datagram dropped")
		}
	}()
	r.mu.Lock()
	a := r.bySrc[src]
	if a == nil {
		for _, id := range r.order {
			if c := r.assocs[id]; c != nil && c.matches(src) {
				c.src, a = src, c
				r.bySrc[src] = c
				break
			}
		}
	}
	r.mu.Unlock()
	if a == nil || !a.send(p) {
		r.log.WithField("from", src.String()).Debug("udp datagram dropped")
	}
}
