package runner

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"usocks/stages/frontend"
)

// dnsServer answers every query with the same question and one A record
// (10.1.2.3): enough of DNS for a client to check the round trip.
func dnsServer(t *testing.T) *net.UDPConn {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if n < 12 {
				continue
			}
			resp := append([]byte(nil), q...)
			resp[2] |= 0x80                         // QR: a response
			binary.BigEndian.PutUint16(resp[6:], 1) // ANCOUNT
			resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3)
			_, _ = pc.WriteToUDPAddrPort(resp, from)
		}
	}()
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// dnsQuery builds a query for name, type A, with the given id.
func dnsQuery(id uint16, name string) []byte {
	q := binary.BigEndian.AppendUint16(nil, id)
	q = append(q, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0) // RD, QDCOUNT 1
	for _, label := range bytes.Split([]byte(name), []byte(".")) {
		q = append(append(q, byte(len(label))), label...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

// socksUDP runs the SOCKS5 UDP ASSOCIATE exchange on a TCP connection to
// the client and returns the relay address from the reply.
func socksUDP(t *testing.T, proxy string) (net.Conn, netip.AddrPort) {
	t.Helper()
	c, code, relay := socksAssociate(t, proxy)
	if code != frontend.SocksSucceeded {
		t.Fatalf("UDP ASSOCIATE reply code %d", code)
	}
	return c, relay
}

// socksAssociate runs the exchange and returns the reply's code (and the
// relay address if it succeeded).
func socksAssociate(t *testing.T, proxy string) (net.Conn, byte, netip.AddrPort) {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{5, 0} {
		t.Fatalf("method reply %x, %v", m, err)
	}
	req := frontend.AppendSocksRequest(nil, frontend.SocksRequest{Cmd: frontend.SocksCmdUDPAssociate, Atyp: frontend.SocksAtypIPv4, Host: "0.0.0.0", Port: 0})
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("UDP ASSOCIATE reply: %v", err)
	}
	if rep[1] != frontend.SocksSucceeded {
		return c, rep[1], netip.AddrPort{}
	}
	if rep[3] != frontend.SocksAtypIPv4 {
		t.Fatalf("UDP ASSOCIATE reply %x", rep)
	}
	_ = c.SetDeadline(time.Time{})
	return c, rep[1], netip.AddrPortFrom(netip.AddrFrom4([4]byte(rep[4:8])), binary.BigEndian.Uint16(rep[8:10]))
}

// dnsRoundTrip sends a DNS query with id from app through the association
// at relay to dns and checks the answer.
func dnsRoundTrip(t *testing.T, app *net.UDPConn, relay netip.AddrPort, dns *net.UDPConn, id uint16) {
	t.Helper()
	dst := dns.LocalAddr().(*net.UDPAddr).AddrPort()
	datagram := frontend.AppendUDPDatagram(nil, dst, dnsQuery(id, "example.test"))
	buf := make([]byte, 1500)
	var n int
	var err error
	for try := 0; ; try++ { // UDP may drop: a few tries, bounded
		if _, err := app.WriteToUDPAddrPort(datagram, relay); err != nil {
			t.Fatal(err)
		}
		_ = app.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err = app.ReadFromUDPAddrPort(buf)
		if err == nil || try == 3 {
			break
		}
	}
	if err != nil {
		t.Fatalf("no DNS answer through the association: %v", err)
	}
	h, answer, err := frontend.ParseUDPDatagram(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if h.Host != "127.0.0.1" || h.Port != dst.Port() {
		t.Fatalf("answer from %s:%d, want %s", h.Host, h.Port, dst)
	}
	if binary.BigEndian.Uint16(answer) != id || answer[2]&0x80 == 0 || !bytes.HasSuffix(answer, []byte{10, 1, 2, 3}) {
		t.Fatalf("bad DNS answer %x", answer)
	}
}

// appUDP is an app's UDP socket on loopback.
func appUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	app, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	return app
}

// TestSocks5UDPAssociateDNS sends a DNS query through a SOCKS5 UDP
// association, over the tunnel, to a resolver on loopback, and checks the
// answer; then the association ends with its TCP connection.
func TestSocks5UDPAssociateDNS(t *testing.T) {
	dns := dnsServer(t)
	yes := true
	tn, proxy := frontendTunnel(t, FrontendConfig{Type: "socks5", Allow: []string{"127.0.0.0/8"}, UDP: &yes, UDPRefuse443: true})
	ctrl, relay := socksUDP(t, proxy)
	defer ctrl.Close()
	if relay.String() != proxy {
		t.Fatalf("relay %s, want the client's own address %s", relay, proxy)
	}
	app := appUDP(t)
	dnsRoundTrip(t, app, relay, dns, 0x4242)
	dst := dns.LocalAddr().(*net.UDPAddr).AddrPort()
	datagram := frontend.AppendUDPDatagram(nil, dst, dnsQuery(0x4242, "example.test"))
	buf := make([]byte, 1500)
	// UDP/443 is refused (QUIC falls back to TCP): dropped and counted.
	s5 := tn.srv.fe.Current().(*frontend.Socks5)
	before := s5.UDPStats.Refused.Load()
	to443 := frontend.AppendUDPDatagram(nil, netip.MustParseAddrPort("127.0.0.1:443"), []byte("quic"))
	if _, err := app.WriteToUDPAddrPort(to443, relay); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the UDP/443 datagram to be refused", 5*time.Second, func() bool { return s5.UDPStats.Refused.Load() > before })
	// Closing the control connection ends the association: datagrams sent
	// afterwards get no answer.
	_ = ctrl.Close()
	// The association has ended once its stream and socket are given back
	// (only the session's backend connection is still counted).
	waitFor(t, "the association to end", 10*time.Second, func() bool { return tn.srv.limits.fds.held.Load() == 1 })
	sent := s5.UDPStats.Sent.Load()
	if _, err := app.WriteToUDPAddrPort(datagram, relay); err != nil {
		t.Fatal(err)
	}
	_ = app.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, _, err := app.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatal("a datagram was answered after its association ended")
	}
	if got := s5.UDPStats.Sent.Load(); got != sent {
		t.Fatalf("server sent %d datagrams after the association ended", got-sent)
	}
}

func TestUDPDatagramCodec(t *testing.T) {
	for _, ap := range []string{"127.0.0.1:53", "[::1]:5353"} {
		a := netip.MustParseAddrPort(ap)
		b := frontend.AppendUDPDatagram(nil, a, []byte("payload"))
		h, data, err := frontend.ParseUDPDatagram(b)
		if err != nil || h.Host != a.Addr().String() || h.Port != a.Port() || string(data) != "payload" {
			t.Fatalf("%s: %+v %q %v", ap, h, data, err)
		}
	}
	for _, bad := range [][]byte{nil, {0, 0, 0}, {1, 0, 0, 1, 1, 2, 3, 4, 0, 53}, {0, 0, 0, 9, 1}, {0, 0, 0, 3, 0, 0, 53}, {0, 0, 0, 1, 1, 2}} {
		if _, _, err := frontend.ParseUDPDatagram(bad); err == nil {
			t.Fatalf("%x parsed", bad)
		}
	}
}
