package frontend

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func associateBytes(auth bool, host string, port uint16) []byte {
	b := []byte{socksVersion, 1, socksAuthNone}
	if auth {
		b = append(b, socksUserPassVersion, 1, 'u', 1, 'p')
	}
	return AppendSocksRequest(b, SocksRequest{Cmd: SocksCmdUDPAssociate, Atyp: SocksAtypIPv4, Host: host, Port: port})
}

func TestAssociateRequest(t *testing.T) {
	connect := append([]byte{socksVersion, 1, socksAuthNone},
		AppendSocksRequest(nil, SocksRequest{Cmd: SocksCmdConnect, Atyp: SocksAtypIPv4, Host: "1.2.3.4", Port: 80})...)
	for _, c := range []struct {
		name string
		in   []byte
		ok   bool
		want netip.AddrPort
	}{
		{"associate, no address", associateBytes(false, "0.0.0.0", 0), true, netip.MustParseAddrPort("0.0.0.0:0")},
		{"associate with auth and address", associateBytes(true, "127.0.0.1", 5353), true, netip.MustParseAddrPort("127.0.0.1:5353")},
		{"connect", connect, false, netip.AddrPort{}},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), false, netip.AddrPort{}},
		{"nothing", nil, false, netip.AddrPort{}},
		{"associate and more", append(associateBytes(false, "0.0.0.0", 0), 'x'), false, netip.AddrPort{}},
		{"cut short", associateBytes(false, "0.0.0.0", 0)[:7], false, netip.AddrPort{}},
	} {
		got, ok := associateRequest(c.in)
		if ok != c.ok || ok && got != c.want {
			t.Errorf("%s: %v %v, want %v %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

// TestUDPRelayAssociations: a stream that did not ask for an association
// gets no reply; a duplicate Open and a Close leave nothing that crashes
// the relay's reader (it dereferenced a forgotten association); an
// association that names its app's address is claimed only from there.
func TestUDPRelayAssociations(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := NewUDPRelay(pc, discardLog)
	done := make(chan struct{})
	go func() { defer close(done); r.Run() }()
	defer func() { _ = pc.Close(); <-done }()
	lo := netip.MustParseAddr("127.0.0.1")
	got := make(chan string, 4)
	send := func(p []byte) bool { got <- string(p); return true }

	if reply := r.Open(5, lo, []byte("GET / HTTP/1.1\r\n\r\n"), send); reply != nil {
		t.Fatalf("a TCP stream got a reply %x", reply)
	}
	assoc := associateBytes(false, "0.0.0.0", 0)
	if r.Open(5, lo, assoc, send) == nil {
		t.Fatal("no reply to an association")
	}
	if r.Open(5, lo, assoc, send) == nil {
		t.Fatal("no reply to a duplicate Open of the association")
	}
	r.Close(5)

	appA, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	appB, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer appA.Close()
	defer appB.Close()
	b := appB.LocalAddr().(*net.UDPAddr).AddrPort()
	if r.Open(6, lo, associateBytes(false, "127.0.0.1", b.Port()), send) == nil {
		t.Fatal("no reply to an association with an address")
	}
	to := net.UDPAddrFromAddrPort(r.Addr())
	if _, err := appA.WriteToUDP([]byte("from A"), to); err != nil {
		t.Fatal(err)
	}
	if _, err := appB.WriteToUDP([]byte("from B"), to); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "from B" {
			t.Fatalf("association claimed by %q, want only the address it named", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing forwarded: the relay's reader is gone")
	}
}

// dgramStream is the stream side of an association under test.
type dgramStream struct{ got chan []byte }

func (d *dgramStream) Read([]byte) (int, error)    { return 0, io.EOF }
func (d *dgramStream) Write(p []byte) (int, error) { return len(p), nil }
func (d *dgramStream) ID() uint16                  { return 9 }

func (d *dgramStream) OpenAssociation() (<-chan []byte, error) { return nil, nil }
func (d *dgramStream) SendDatagram(p []byte) bool {
	d.got <- append([]byte(nil), p...)
	return true
}

// TestAssociationAcceptsOnlyItsPeers: the server's UDP socket of an
// association passes on replies only from destinations the app sent to.
func TestAssociationAcceptsOnlyItsPeers(t *testing.T) {
	acl, err := newACL([]string{"127.0.0.0/8"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	target, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	stranger, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer target.Close()
	defer stranger.Close()
	in := make(chan []byte, 1)
	ds := &dgramStream{got: make(chan []byte, 4)}
	a := &association{s: ds, in: in, pc: pc, dialer: NewDialer(acl, time.Second, 0), log: discardLog, stats: &UDPStats{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.run(ctx) }()
	defer func() { cancel(); <-done }()

	ta := target.LocalAddr().(*net.UDPAddr).AddrPort()
	in <- AppendUDPDatagram(nil, ta, []byte("query"))
	buf := make([]byte, 64)
	_ = target.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := target.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "query" {
		t.Fatalf("target got %q %v", buf[:n], err)
	}
	to := net.UDPAddrFromAddrPort(from)
	if _, err := stranger.WriteToUDP([]byte("injected"), to); err != nil {
		t.Fatal(err)
	}
	if _, err := target.WriteToUDP([]byte("answer"), to); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-ds.got:
		h, data, err := ParseUDPDatagram(p)
		if err != nil || string(data) != "answer" || h.Port != ta.Port() {
			t.Fatalf("app got %+v %q %v, want only the target's answer", h, data, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	if got := a.stats.Dropped.Load(); got != 1 {
		t.Fatalf("dropped %d, want the stranger's datagram", got)
	}
}
