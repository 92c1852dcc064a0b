package frontend

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// Target dialing for the proxy frontends (SOCKS5, HTTP): access control,
// a dial timeout, happy eyeballs and a cap on concurrent dials.
//
// The access check runs in the net.Dialer's Control hook, i.e. after name
// resolution, on every address the dialer actually connects to and right
// before connect(2). A name that resolves to a denied address is refused
// like the address itself, so DNS cannot be used to reach what the ACL
// forbids, and a name with both allowed and denied addresses reaches only
// the allowed ones.

// ErrDenied is a target refused by the access rules.
var ErrDenied = errors.New("target denied by access rules")

// Defaults for Dialer.
const (
	// DefaultMaxDials caps the concurrent dials of one Dialer.
	DefaultMaxDials = 64
	// defaultFallbackDelay is the happy-eyeballs delay before the other
	// address family is tried (RFC 8305 suggests 250 ms; Go uses 300 ms).
	defaultFallbackDelay = 300 * time.Millisecond
)

// Rule is one ACL entry: a network and optionally one port (0 = any).
type Rule struct {
	Prefix netip.Prefix // always unmapped (IPv4 prefixes as IPv4)
	Port   uint16
}

// String formats r the way parseRule reads it.
func (r Rule) String() string {
	if r.Port == 0 {
		return r.Prefix.String()
	}
	if r.Prefix.Addr().Is6() {
		return "[" + r.Prefix.Addr().String() + "]/" + strconv.Itoa(r.Prefix.Bits()) + ":" + strconv.Itoa(int(r.Port))
	}
	return r.Prefix.String() + ":" + strconv.Itoa(int(r.Port))
}

// Matches reports whether ap is inside r.
func (r Rule) Matches(ap netip.AddrPort) bool {
	if r.Port != 0 && ap.Port() != r.Port {
		return false
	}
	return r.Prefix.Contains(canonAddr(ap.Addr()))
}

// canonAddr strips the zone and unmaps IPv4-mapped IPv6, so that one rule
// covers every spelling of an address.
func canonAddr(a netip.Addr) netip.Addr {
	return a.WithZone("").Unmap()
}

// parseRule reads an ACL entry: a CIDR or a bare IP (/32 or /128), with an
// optional port: "127.0.0.0/8", "10.0.0.0/8:443", "192.0.2.7",
// "::1", "fc00::/7", "[::1]/128:22", "[2001:db8::1]:443".
func parseRule(s string) (Rule, error) {
	orig := s
	bad := func(why string) (Rule, error) {
		return Rule{}, fmt.Errorf("%q: %s", orig, why)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return bad("empty rule")
	}
	var addrPart, bitsPart, portPart string
	hasBits := false
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return bad("missing ']'")
		}
		addrPart, s = s[1:end], s[end+1:]
		if strings.HasPrefix(s, "/") {
			hasBits = true
			s = s[1:]
			if i := strings.IndexByte(s, ':'); i >= 0 {
				bitsPart, portPart = s[:i], s[i+1:]
				if portPart == "" {
					return bad("empty port")
				}
			} else {
				bitsPart = s
			}
		} else if strings.HasPrefix(s, ":") {
			portPart = s[1:]
			if portPart == "" {
				return bad("empty port")
			}
		} else if s != "" {
			return bad("unexpected text after ']'")
		}
		if !strings.Contains(addrPart, ":") {
			return bad("brackets are only for IPv6 addresses")
		}
	} else {
		if strings.Count(s, ":") == 1 {
			i := strings.IndexByte(s, ':')
			s, portPart = s[:i], s[i+1:]
			if portPart == "" {
				return bad("empty port")
			}
		}
		if i := strings.IndexByte(s, '/'); i >= 0 {
			hasBits = true
			addrPart, bitsPart = s[:i], s[i+1:]
		} else {
			addrPart = s
		}
	}
	if strings.ContainsRune(addrPart, '%') {
		return bad("zones are not allowed")
	}
	addr, err := netip.ParseAddr(addrPart)
	if err != nil {
		return bad(`not an IP address or network (want a CIDR or IP with an optional port: "10.0.0.0/8", "10.0.0.0/8:443", "[::1]/128:22")`)
	}
	bits := addr.BitLen()
	if hasBits {
		b, ok := atoiDigits(bitsPart)
		if !ok || b > addr.BitLen() {
			return bad(fmt.Sprintf("prefix length must be 0..%d", addr.BitLen()))
		}
		bits = b
	}
	p := netip.PrefixFrom(addr, bits)
	if p.Masked() != p {
		return bad(fmt.Sprintf("host bits set (did you mean %s?)", p.Masked()))
	}
	p = unmapPrefix(p)
	var port uint16
	if portPart != "" {
		n, ok := atoiDigits(portPart)
		if !ok || n < 1 || n > 65535 {
			return bad("port must be 1..65535")
		}
		port = uint16(n)
	}
	return Rule{Prefix: p, Port: port}, nil
}

// atoiDigits parses 1 to 5 decimal digits (no sign, no spaces).
func atoiDigits(s string) (int, bool) {
	if len(s) == 0 || len(s) > 5 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n ≥ 96) into a.b.c.d/(n-96), so all
// matching is done on unmapped addresses. Shorter mapped prefixes cover
// more than the mapped space and are kept as they are.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr()
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

// ParseRules parses a list; the error names the index of the bad entry.
func ParseRules(list []string) ([]Rule, error) {
	out := make([]Rule, 0, len(list))
	for i, s := range list {
		r, err := parseRule(s)
		if err != nil {
			return nil, &RuleError{Index: i, Err: err}
		}
		out = append(out, r)
	}
	return out, nil
}

// RuleError is a bad entry in a rule list.
type RuleError struct {
	Index int
	Err   error
}

func (e *RuleError) Error() string { return e.Err.Error() }
func (e *RuleError) Unwrap() error { return e.Err }

// defaultDeny is what the proxy frontends refuse unless a rule in Allow
// says otherwise: this host, private and shared networks, link-local
// (cloud metadata lives there), unspecified, multicast and broadcast.
// IPv4-mapped IPv6 forms are covered because addresses are unmapped before
// matching.
var defaultDeny = mustRules(
	"0.0.0.0/8",      // "this network"; 0.0.0.0 reaches this host
	"127.0.0.0/8",    // loopback
	"10.0.0.0/8",     // private
	"172.16.0.0/12",  // private
	"192.168.0.0/16", // private
	"100.64.0.0/10",  // shared address space (carrier-grade NAT)
	"169.254.0.0/16", // link-local
	"224.0.0.0/4",    // multicast
	"255.255.255.255/32",
	"::/128",    // unspecified
	"::1/128",   // loopback
	"fc00::/7",  // unique local
	"fe80::/10", // link-local
	"ff00::/8",  // multicast
)

func mustRules(list ...string) []Rule {
	r, err := ParseRules(list)
	if err != nil {
		panic(err)
	}
	return r
}

// ACL decides which target addresses a proxy frontend may connect to.
// Order: an explicit Deny match refuses; else an explicit Allow match
// permits (Allow overrides the default deny); else a defaultDeny match
// refuses (unless NoDefaultDeny); else the target is allowed.
type ACL struct {
	Allow, Deny   []Rule
	NoDefaultDeny bool
}

// newACL parses allow and deny lists.
func newACL(allow, deny []string) (*ACL, error) {
	a, err := ParseRules(allow)
	if err != nil {
		return nil, fmt.Errorf("allow: %w", err)
	}
	d, err := ParseRules(deny)
	if err != nil {
		return nil, fmt.Errorf("deny: %w", err)
	}
	return &ACL{Allow: a, Deny: d}, nil
}

// Check returns nil if ap may be dialled, or an error wrapping ErrDenied.
func (a *ACL) Check(ap netip.AddrPort) error {
	if a == nil {
		return nil
	}
	for _, r := range a.Deny {
		if r.Matches(ap) {
			return &deniedError{Addr: ap, Rule: "deny " + r.String()}
		}
	}
	for _, r := range a.Allow {
		if r.Matches(ap) {
			return nil
		}
	}
	if !a.NoDefaultDeny {
		for _, r := range defaultDeny {
			if r.Matches(ap) {
				return &deniedError{Addr: ap, Rule: "default deny " + r.String()}
			}
		}
	}
	return nil
}

// deniedError says which rule refused an address.
type deniedError struct {
	Addr netip.AddrPort
	Rule string
}

func (e *deniedError) Error() string {
	return fmt.Sprintf("%s denied by %s", e.Addr, e.Rule)
}

// Is makes errors.Is(err, ErrDenied) true.
func (e *deniedError) Is(target error) bool { return target == ErrDenied }

// Dialer connects the proxy frontends to their targets. Use NewDialer.
type Dialer struct {
	// ACL is checked on every address dialled; nil allows everything.
	ACL *ACL
	// Timeout bounds one Dial: waiting for a dial slot, name resolution
	// and connect together.
	Timeout time.Duration
	// FallbackDelay is the happy-eyeballs delay (net.Dialer's meaning;
	// negative disables the race).
	FallbackDelay time.Duration
	// Resolver, if set, resolves names (tests use one that never leaves
	// the host).
	Resolver *net.Resolver

	slots chan struct{}
}

// NewDialer makes a Dialer; zero arguments take the defaults.
func NewDialer(acl *ACL, timeout time.Duration, maxDials int) *Dialer {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	if maxDials <= 0 {
		maxDials = DefaultMaxDials
	}
	return &Dialer{ACL: acl, Timeout: timeout, FallbackDelay: defaultFallbackDelay, slots: make(chan struct{}, maxDials)}
}

// defaultDialer serves frontends built without a Dialer: defaults, and
// the default deny.
var defaultDialer = NewDialer(&ACL{}, 0, 0)

func dialerOr(d *Dialer) *Dialer {
	if d == nil {
		return defaultDialer
	}
	return d
}

// Dial connects to host:port over TCP. host is an IP literal or a name.
// Names under the reserved .invalid TLD fail at once (RFC 6761) without
// any query. Errors can be sorted with classifyDialError.
func (d *Dialer) Dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	if isInvalidName(host) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
	}
	t := d.Timeout
	if t <= 0 {
		t = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	if d.slots != nil {
		select {
		case d.slots <- struct{}{}:
			defer func() { <-d.slots }()
		case <-ctx.Done():
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("waiting for a dial slot: %w", ctx.Err())}
		}
	}
	nd := net.Dialer{
		KeepAlive:     -1, // streams have idle timeouts; saves syscalls per dial
		FallbackDelay: d.FallbackDelay,
		Resolver:      d.Resolver,
		ControlContext: func(_ context.Context, _, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: unparsable address %q", ErrDenied, address)
			}
			return d.ACL.Check(ap)
		},
	}
	return nd.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
}

// Resolve turns host:port into one address a datagram may be sent to:
// IP literals as they are, names through the resolver (the first address
// the access rules allow). The ACL is checked as for Dial.
func (d *Dialer) Resolve(ctx context.Context, host string, port uint16) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		ap := netip.AddrPortFrom(a.Unmap(), port)
		return ap, d.ACL.Check(ap)
	}
	if isInvalidName(host) {
		return netip.AddrPort{}, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	t := d.Timeout
	if t <= 0 {
		t = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	err = &net.DNSError{Err: "no address", Name: host, IsNotFound: true}
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a.Unmap(), port)
		if err = d.ACL.Check(ap); err == nil {
			return ap, nil
		}
	}
	return netip.AddrPort{}, err
}

// isInvalidName reports a name under the reserved TLD "invalid".
func isInvalidName(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return h == "invalid" || strings.HasSuffix(h, ".invalid")
}

// dialFailure is why a dial failed, as the proxy protocols report it.
type dialFailure int

// Dial failures.
const (
	failGeneral         dialFailure = iota // anything else
	failDenied                             // refused by the ACL
	failNetUnreachable                     // no route to the network
	failHostUnreachable                    // no such host, no route to host
	failRefused                            // connection refused
	failTimeout                            // dial timeout
)

func (f dialFailure) String() string {
	switch f {
	case failDenied:
		return "denied"
	case failNetUnreachable:
		return "network unreachable"
	case failHostUnreachable:
		return "host unreachable"
	case failRefused:
		return "connection refused"
	case failTimeout:
		return "timeout"
	}
	return "general failure"
}

// classifyDialError sorts a Dial error.
func classifyDialError(err error) dialFailure {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return failGeneral
	case errors.Is(err, ErrDenied):
		return failDenied
	case errors.As(err, &dnsErr):
		if dnsErr.IsTimeout {
			return failTimeout
		}
		// No such name, or no usable answer.
		return failHostUnreachable
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return failNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return failHostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT):
		return failTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return failTimeout
	}
	return failGeneral
}

// What follows is shared by the proxy frontends.

// defaultHandshakeTimeout bounds how long a proxy frontend waits for the
// app's request (and authentication) before it resets the stream.
const defaultHandshakeTimeout = 30 * time.Second

// errHandshakeTimeout is a request that did not arrive in time.
var errHandshakeTimeout = errors.New("proxy request not received in time")

// readRequest runs f, the part of a proxy handshake that reads the app's
// request from the stream, bounded by timeout and ctx. stages.StreamIO has no
// read deadline, so f runs in its own goroutine; when the time is up,
// readRequest returns an error, the stage resets the stream (as it does
// for every failed Open) and that ends f's pending Read.
func readRequest[T any](ctx context.Context, timeout time.Duration, f func() (T, error)) (T, error) {
	if timeout <= 0 {
		timeout = defaultHandshakeTimeout
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var zero T
	select {
	case r := <-ch:
		return r.v, r.err
	case <-t.C:
		return zero, errHandshakeTimeout
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// checkCredentials reports whether user and pass match an entry of users.
// The comparison takes the same time whether or not the user exists and
// however long the strings are.
func checkCredentials(users map[string]string, user, pass string) bool {
	want, known := users[user]
	a := sha256.Sum256([]byte(pass))
	b := sha256.Sum256([]byte(want))
	eq := subtle.ConstantTimeCompare(a[:], b[:]) == 1
	return known && eq
}

// validHost reports whether h can be dialled as a host: an IP literal
// without zone, or a DNS name of letters, digits, '-', '_' and '.', with
// no empty label, at most 253 characters (plus a final dot).
func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0
}

// closedConn is what a proxy frontend returns after it has answered the
// app with an error: a target that is already at EOF and discards what it
// is sent. The stage then ends the stream with a FIN after the reply,
// instead of an RST that could overtake the reply and destroy it.
type closedConn struct{}

var closedAddr = &net.TCPAddr{IP: net.IPv4zero}

func (closedConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (closedConn) Write(p []byte) (int, error)      { return len(p), nil }
func (closedConn) Close() error                     { return nil }
func (closedConn) CloseWrite() error                { return nil }
func (closedConn) LocalAddr() net.Addr              { return closedAddr }
func (closedConn) RemoteAddr() net.Addr             { return closedAddr }
func (closedConn) SetDeadline(time.Time) error      { return nil }
func (closedConn) SetReadDeadline(time.Time) error  { return nil }
func (closedConn) SetWriteDeadline(time.Time) error { return nil }

// writeEarly sends bytes the frontend already took from the stream (the
// app's data that followed its request) to the target before the splice.
func writeEarly(c net.Conn, b []byte, timeout time.Duration) error {
	if len(b) == 0 {
		return nil
	}
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.Write(b)
	_ = c.SetWriteDeadline(time.Time{})
	return err
}

var discardLog = func() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}()

// frontendLog is l, or a logger that discards when l is nil.
func frontendLog(l *logrus.Entry) *logrus.Entry {
	if l == nil {
		return discardLog
	}
	return l
}
