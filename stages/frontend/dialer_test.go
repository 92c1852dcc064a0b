package frontend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestParseRule(t *testing.T) {
	good := []struct {
		in, prefix string
		port       uint16
		str        string
	}{
		{"127.0.0.0/8", "127.0.0.0/8", 0, "127.0.0.0/8"},
		{"10.0.0.0/8:443", "10.0.0.0/8", 443, "10.0.0.0/8:443"},
		{"192.0.2.7", "192.0.2.7/32", 0, "192.0.2.7/32"},
		{"192.0.2.7:22", "192.0.2.7/32", 22, "192.0.2.7/32:22"},
		{"0.0.0.0/0", "0.0.0.0/0", 0, "0.0.0.0/0"},
		{" 10.1.0.0/16 ", "10.1.0.0/16", 0, "10.1.0.0/16"},
		{"::1", "::1/128", 0, "::1/128"},
		{"fc00::/7", "fc00::/7", 0, "fc00::/7"},
		{"[::1]/128:22", "::1/128", 22, "[::1]/128:22"},
		{"[::1]:22", "::1/128", 22, "[::1]/128:22"},
		{"[2001:db8::]/32", "2001:db8::/32", 0, "2001:db8::/32"},
		{"[2001:db8::1]", "2001:db8::1/128", 0, "2001:db8::1/128"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8", 0, "10.0.0.0/8"},
		{"::ffff:127.0.0.1", "127.0.0.1/32", 0, "127.0.0.1/32"},
		{"[::ffff:127.0.0.1]:80", "127.0.0.1/32", 80, "127.0.0.1/32:80"},
		{"10.0.0.0/8:65535", "10.0.0.0/8", 65535, "10.0.0.0/8:65535"},
	}
	for _, c := range good {
		r, err := parseRule(c.in)
		if err != nil {
			t.Errorf("parseRule(%q): %v", c.in, err)
			continue
		}
		if r.Prefix != netip.MustParsePrefix(c.prefix) || r.Port != c.port {
			t.Errorf("parseRule(%q) = %v port %d, want %s port %d", c.in, r.Prefix, r.Port, c.prefix, c.port)
		}
		if r.String() != c.str {
			t.Errorf("parseRule(%q).String() = %q, want %q", c.in, r.String(), c.str)
		}
		if back, err := parseRule(r.String()); err != nil || back != r {
			t.Errorf("round trip of %q: %v %v", r.String(), back, err)
		}
	}
	bad := []string{
		"", " ", "example.com", "10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8",
		"10.0.0.0/8:", "10.0.0.0/8:0", "10.0.0.0/8:65536", "10.0.0.0/8:http", "10.0.0.0/8:+1",
		"[::1", "[::1]x", "[::1]/129", "[10.0.0.1]:80", "fe80::1%eth0", "[fe80::1%eth0]:80",
		"::1/128:22", "1.2.3", "10.0.0.0/", "[::1]/:22", "[::1]/128:",
	}
	for _, in := range bad {
		if r, err := parseRule(in); err == nil {
			t.Errorf("parseRule(%q) = %v, want an error", in, r)
		}
	}
	if _, err := ParseRules([]string{"10.0.0.0/8", "nope"}); err == nil {
		t.Error("ParseRules accepted a bad entry")
	} else {
		var re *RuleError
		if !errors.As(err, &re) || re.Index != 1 {
			t.Errorf("ParseRules error %v does not name index 1", err)
		}
	}
}

func TestACLCheck(t *testing.T) {
	acl := func(allow, deny []string) *ACL {
		a, err := newACL(allow, deny)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	def := acl(nil, nil)
	lo := acl([]string{"127.0.0.0/8"}, nil)
	own := acl(nil, nil)
	own.own = func() []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8:1::7")}
	}
	ownAllowed := acl([]string{"198.51.100.7"}, nil)
	ownAllowed.own = own.own
	mixed := acl([]string{"10.0.0.0/8", "192.168.1.5:8080"}, []string{"10.9.0.0/16", "203.0.113.0/24:25", "[2001:db8::]/32:22"})
	cases := []struct {
		name string
		acl  *ACL
		addr string
		ok   bool
	}{
		{"nil acl", nil, "127.0.0.1:80", true},
		{"public v4", def, "203.0.113.9:443", true},
		{"public v6", def, "[2001:db8::1]:443", true},
		{"loopback", def, "127.0.0.1:80", false},
		{"loopback other", def, "127.1.2.3:80", false},
		{"loopback v6", def, "[::1]:80", false},
		{"mapped loopback", def, "[::ffff:127.0.0.1]:80", false},
		{"mapped private", def, "[::ffff:10.1.2.3]:80", false},
		{"private 10", def, "10.0.0.1:80", false},
		{"private 172.16", def, "172.16.0.1:80", false},
		{"private 172.31", def, "172.31.255.255:80", false},
		{"not private 172.32", def, "172.32.0.1:80", true},
		{"private 192.168", def, "192.168.0.1:80", false},
		{"link-local metadata", def, "169.254.169.254:80", false},
		{"link-local v6", def, "[fe80::1]:80", false},
		{"link-local v6 zone", def, "[fe80::1%eth0]:80", false},
		{"ula", def, "[fd00::1]:80", false},
		{"unspecified", def, "0.0.0.0:80", false},
		{"unspecified v6", def, "[::]:80", false},
		{"this network", def, "0.1.2.3:80", false},
		{"multicast", def, "224.0.0.1:80", false},
		{"multicast v6", def, "[ff02::1]:80", false},
		{"broadcast", def, "255.255.255.255:80", false},
		{"cgnat", def, "100.64.0.1:80", false},
		{"nat64", def, "[64:ff9b::a00:1]:80", false},
		{"nat64 public", def, "[64:ff9b::cb00:7101]:80", false},
		{"local-use nat64", def, "[64:ff9b:1::1]:80", false},
		{"ipv4-compatible", def, "[::7f00:1]:80", false},
		{"ipv4-compatible public", def, "[::cb00:7101]:80", false},
		{"benchmarking", def, "198.19.255.1:80", false},
		{"not benchmarking", def, "198.20.0.1:80", true},
		{"reserved 240", def, "240.0.0.1:80", false},
		{"ietf assignments", def, "192.0.0.8:80", false},
		{"not ietf", def, "192.0.1.1:80", true},
		{"cloud host endpoint", def, "168.63.129.16:53", false},
		{"cloud neighbour", def, "168.63.129.17:53", true},
		{"own address", own, "198.51.100.7:22", false},
		{"own v6 address", own, "[2001:db8:1::7]:22", false},
		{"own mapped", own, "[::ffff:198.51.100.7]:22", false},
		{"not own", own, "198.51.100.8:22", true},
		{"own allowed", ownAllowed, "198.51.100.7:22", true},
		{"allow overrides default", lo, "127.0.0.1:80", true},
		{"allow covers mapped", lo, "[::ffff:127.0.0.1]:80", true},
		{"allow is per network", lo, "[::1]:80", false},
		{"allow is per network 2", lo, "10.0.0.1:80", false},
		{"allow private", mixed, "10.1.2.3:80", true},
		{"deny beats allow", mixed, "10.9.1.1:80", false},
		{"allow port match", mixed, "192.168.1.5:8080", true},
		{"allow port mismatch falls to default deny", mixed, "192.168.1.5:8081", false},
		{"deny port match", mixed, "203.0.113.7:25", false},
		{"deny port mismatch", mixed, "203.0.113.7:587", true},
		{"deny v6 port", mixed, "[2001:db8::5]:22", false},
		{"deny v6 other port", mixed, "[2001:db8::5]:443", true},
		{"no default deny", &ACL{noDefaultDeny: true}, "127.0.0.1:80", true},
	}
	for _, c := range cases {
		err := c.acl.Check(netip.MustParseAddrPort(c.addr))
		if (err == nil) != c.ok {
			t.Errorf("%s: Check(%s) = %v, want allowed=%v", c.name, c.addr, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrDenied) {
			t.Errorf("%s: error %v is not ErrDenied", c.name, err)
		}
	}
}

func TestClassifyDialError(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	cases := []struct {
		err  error
		want dialFailure
	}{
		{op(&deniedError{Rule: "x"}), failDenied},
		{op(fmt.Errorf("%w: x", ErrDenied)), failDenied},
		{op(&net.DNSError{Err: "no such host", IsNotFound: true}), failHostUnreachable},
		{op(&net.DNSError{Err: "server misbehaving"}), failHostUnreachable},
		{op(&net.DNSError{Err: "i/o timeout", IsTimeout: true}), failTimeout},
		{op(os.NewSyscallError("connect", syscall.ECONNREFUSED)), failRefused},
		{op(os.NewSyscallError("connect", syscall.ENETUNREACH)), failNetUnreachable},
		{op(os.NewSyscallError("connect", syscall.EHOSTUNREACH)), failHostUnreachable},
		{op(os.NewSyscallError("connect", syscall.ETIMEDOUT)), failTimeout},
		{op(context.DeadlineExceeded), failTimeout},
		{op(os.ErrDeadlineExceeded), failTimeout},
		{op(errors.New("something else")), failGeneral},
		{op(context.Canceled), failGeneral},
	}
	for _, c := range cases {
		if got := classifyDialError(c.err); got != c.want {
			t.Errorf("classifyDialError(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	codes := map[dialFailure]byte{failGeneral: 1, failDenied: 2, failNetUnreachable: 3, failHostUnreachable: 4, failRefused: 5, failTimeout: 6}
	status := map[dialFailure]int{failGeneral: 502, failDenied: 403, failNetUnreachable: 502, failHostUnreachable: 502, failRefused: 502, failTimeout: 504}
	for f, c := range codes {
		if socksReplyCode(f) != c || httpStatus(f) != status[f] {
			t.Errorf("%v: socks %d http %d, want %d %d", f, socksReplyCode(f), httpStatus(f), c, status[f])
		}
	}
}

// pxResolver is a resolver that never leaves the host: /etc/hosts works,
// and every DNS query blocks until release is closed or the query's ctx
// ends. queries counts DNS attempts; queried, if set, is told of each.
func pxResolver(release <-chan struct{}, queries *atomic.Int64, queried chan<- struct{}) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		queries.Add(1)
		if queried != nil {
			select {
			case queried <- struct{}{}:
			default:
			}
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, errors.New("no DNS in tests")
	}}
}

// pxListener accepts on 127.0.0.1 and counts connections. Connections
// from pxSentinel are not counted: waitAccepted uses them as markers.
type pxListener struct {
	ln        net.Listener
	accepted  atomic.Int64
	wg        sync.WaitGroup
	conns     chan net.Conn
	sentinels chan struct{}
}

// pxSentinel is the source address of waitAccepted's marker connections.
var pxSentinel = net.IPv4(127, 0, 0, 77)

func pxListen(t *testing.T) *pxListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &pxListener{ln: ln, conns: make(chan net.Conn, 16), sentinels: make(chan struct{}, 1)}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok && ta.IP.Equal(pxSentinel) {
				_ = c.Close()
				l.sentinels <- struct{}{}
				continue
			}
			l.accepted.Add(1)
			select {
			case l.conns <- c:
			default:
				_ = c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		l.wg.Wait()
		close(l.conns)
		for c := range l.conns {
			_ = c.Close()
		}
	})
	return l
}

// waitAccepted checks that exactly n connections were accepted. It
// connects a marker from pxSentinel and waits until that is accepted: the
// listener accepts in the order connections were established, so by then
// every connection made before the call has been accepted and counted,
// however slowly the accept loop runs.
func (l *pxListener) waitAccepted(t *testing.T, n int64) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: pxSentinel}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", l.ln.Addr().String())
	if err != nil {
		t.Fatalf("marker connection: %v", err)
	}
	defer c.Close()
	select {
	case <-l.sentinels:
	case <-time.After(10 * time.Second):
		t.Fatal("the marker connection was never accepted")
	}
	if got := l.accepted.Load(); got != n {
		t.Errorf("target saw %d connections, want %d", got, n)
	}
}

func (l *pxListener) port() uint16 { return uint16(l.ln.Addr().(*net.TCPAddr).Port) }

// pxClosedPort is a loopback port with nothing listening.
func pxClosedPort(t *testing.T) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := uint16(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close()
	return p
}

func pxDialer(t *testing.T, allow []string, maxDials int, queries *atomic.Int64) *Dialer {
	acl, err := newACL(allow, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := NewDialer(acl, 2*time.Second, maxDials)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	if queries == nil {
		queries = new(atomic.Int64)
	}
	d.resolver = pxResolver(release, queries, nil)
	return d
}

func TestDialerACL(t *testing.T) {
	l := pxListen(t)
	ctx := context.Background()
	var queries atomic.Int64
	def := pxDialer(t, nil, 0, &queries)
	for _, host := range []string{"127.0.0.1", "::ffff:127.0.0.1", "localhost"} {
		c, err := def.Dial(ctx, host, l.port())
		if err == nil {
			c.Close()
			t.Fatalf("default deny: dial %s succeeded", host)
		}
		if f := classifyDialError(err); f != failDenied {
			t.Errorf("dial %s: %v (%v), want denied", host, err, f)
		}
	}
	if n := l.accepted.Load(); n != 0 {
		t.Fatalf("the denied target saw %d connections", n)
	}
	allowed := pxDialer(t, []string{"127.0.0.0/8"}, 0, &queries)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		c, err := allowed.Dial(ctx, host, l.port())
		if err != nil {
			t.Fatalf("allowed dial %s: %v", host, err)
		}
		c.Close()
	}
	// A port rule: only that port is allowed.
	portOnly := pxDialer(t, []string{fmt.Sprintf("127.0.0.1:%d", l.port()+1)}, 0, &queries)
	if _, err := portOnly.Dial(ctx, "127.0.0.1", l.port()); classifyDialError(err) != failDenied {
		t.Errorf("port rule: %v, want denied", err)
	}
	if q := queries.Load(); q != 0 {
		t.Errorf("%d DNS queries for names in /etc/hosts and literals", q)
	}
}

func TestDialerErrors(t *testing.T) {
	var queries atomic.Int64
	d := pxDialer(t, []string{"127.0.0.0/8"}, 0, &queries)
	ctx := context.Background()
	_, err := d.Dial(ctx, "127.0.0.1", pxClosedPort(t))
	if f := classifyDialError(err); f != failRefused {
		t.Errorf("closed port: %v (%v), want refused", err, f)
	}
	// The test resolver blocks every query until the test ends: a name
	// that reached it would fail with a timeout, not "no such host".
	for _, host := range []string{"nothing.invalid", "a.b.INVALID.", "invalid"} {
		_, err = d.Dial(ctx, host, 80)
		if f := classifyDialError(err); f != failHostUnreachable {
			t.Errorf("%s: %v (%v), want host unreachable", host, err, f)
		}
	}
	if q := queries.Load(); q != 0 {
		t.Errorf(".invalid names caused %d DNS queries", q)
	}
	// A name that needs DNS: the test resolver blocks, so the dial times out.
	d.Timeout = 100 * time.Millisecond
	_, err = d.Dial(ctx, "needs-dns.test", 80)
	if f := classifyDialError(err); f != failTimeout {
		t.Errorf("blocked resolution: %v (%v), want timeout", err, f)
	}
}

func TestDialerMaxDials(t *testing.T) {
	l := pxListen(t)
	var queries atomic.Int64
	d := pxDialer(t, []string{"127.0.0.0/8"}, 1, &queries)
	queried := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	d.resolver = pxResolver(release, &queries, queried)
	// The one slot is taken by a dial stuck in name resolution.
	stuckCtx, unstick := context.WithCancel(context.Background())
	stuck := make(chan error, 1)
	go func() {
		_, err := d.Dial(stuckCtx, "stuck.test", 80)
		stuck <- err
	}()
	select {
	case <-queried:
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck dial never reached the resolver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := d.Dial(ctx, "127.0.0.1", l.port())
	cancel()
	if f := classifyDialError(err); f != failTimeout {
		t.Fatalf("dial over the cap: %v (%v), want a timeout waiting for a slot", err, f)
	}
	if n := l.accepted.Load(); n != 0 {
		t.Fatalf("a dial over the cap connected (%d)", n)
	}
	unstick()
	<-stuck
	c, err := d.Dial(context.Background(), "127.0.0.1", l.port())
	if err != nil {
		t.Fatalf("dial after the slot was freed: %v", err)
	}
	c.Close()
}

func TestValidHost(t *testing.T) {
	good := []string{"example.com", "example.com.", "a", "xn--bcher-kva.example", "_srv.example", "127.0.0.1", "::1", "2001:db8::1", "a-b.c_d.e"}
	bad := []string{"", ".", "a..b", ".a", "a b", "a/b", "a@b", "a:b", "fe80::1%eth0", "ex\x00ample", "bücher.example",
		string(make([]byte, 254)), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com"}
	for _, h := range good {
		if !validHost(h) {
			t.Errorf("validHost(%q) = false", h)
		}
	}
	for _, h := range bad {
		if validHost(h) {
			t.Errorf("validHost(%q) = true", h)
		}
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"127.0.0.0/8", "10.0.0.0/8:443", "[::1]/128:22", "::ffff:10.0.0.0/104", "[::1]:22", "1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRule(s)
		if err != nil {
			return
		}
		back, err := parseRule(r.String())
		if err != nil || back != r {
			t.Fatalf("%q → %v → %q → %v, %v", s, r, r.String(), back, err)
		}
		if r.Prefix.Addr().Is4In6() && r.Prefix.Bits() >= 96 {
			t.Fatalf("%q: mapped prefix %v not unmapped", s, r.Prefix)
		}
	})
}
