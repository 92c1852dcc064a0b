package frontend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
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

// Defaults for Dialer.
const (
	// DefaultMaxDials caps the concurrent dials of one Dialer.
	DefaultMaxDials = 64
	// defaultFallbackDelay is the happy-eyeballs delay before the other
	// address family is tried (RFC 8305 suggests 250 ms; Go uses 300 ms).
	defaultFallbackDelay = 300 * time.Millisecond
)

// Dialer connects the proxy frontends to their targets. Use NewDialer.
type Dialer struct {
	// ACL is checked on every address dialled; nil allows everything.
	ACL *ACL
	// Timeout bounds one Dial: waiting for a dial slot, name resolution
	// and connect together.
	Timeout time.Duration
	// fallbackDelay is the happy-eyeballs delay (net.Dialer's meaning;
	// negative disables the race).
	fallbackDelay time.Duration
	// resolver, if set, resolves names (tests use one that never leaves
	// the host).
	resolver *net.Resolver

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
	return &Dialer{ACL: acl, Timeout: timeout, fallbackDelay: defaultFallbackDelay, slots: make(chan struct{}, maxDials)}
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
// any query. The dial waits for a slot of the Dialer and of the
// session's Gate. Errors can be sorted with classifyDialError.
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
	done, err := gateFrom(ctx).Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	nd := net.Dialer{
		KeepAlive:     -1, // streams have idle timeouts; saves syscalls per dial
		FallbackDelay: d.fallbackDelay,
		Resolver:      d.resolver,
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
	r := d.resolver
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
