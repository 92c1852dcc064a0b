package frontend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// connect to.
// ErrDenied is a target refused by the access rules.
var ErrDenied = errors.New("target denied by access rules")

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
// says otherwise: this host (loopback, and every address of its
// interfaces: ownAddrs), private and shared networks, link-local (cloud
// metadata lives there), unspecified, multicast, broadcast and reserved,
// and the IPv6 forms that embed an IPv4 address (IPv4-compatible, NAT64).
// IPv4-mapped IPv6 forms are covered because addresses are unmapped before
// matching.
var defaultDeny = mustRules(
	"0.0.0.0/8",        // "this network"; 0.0.0.0 reaches this host
	"127.0.0.0/8",      // loopback
	"10.0.0.0/8",       // private
	"172.16.0.0/12",    // private
	"192.168.0.0/16",   // private
	"100.64.0.0/10",    // shared address space (carrier-grade NAT)
	"169.254.0.0/16",   // link-local
	"224.0.0.0/4",      // multicast
	"240.0.0.0/4",      // reserved, and 255.255.255.255 broadcast
	"192.0.0.0/24",     // IETF protocol assignments (DS-Lite, NAT64 discovery)
	"198.18.0.0/15",    // benchmarking; some networks route it internally
	"168.63.129.16/32", // a cloud's host endpoint (metadata, DNS, health)
	"::/96",            // unspecified, loopback and IPv4-compatible ::a.b.c.d
	"64:ff9b::/96",     // NAT64: reaches any IPv4 address, private ones included
	"64:ff9b:1::/48",   // local-use NAT64
	"fc00::/7",         // unique local
	"fe80::/10",        // link-local
	"ff00::/8",         // multicast
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
// refuses (unless noDefaultDeny); else the target is allowed.
type ACL struct {
	Allow, Deny   []Rule
	noDefaultDeny bool
	// own lists this host's addresses (nil: ownAddrs); tests set it.
	own func() []netip.Addr
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
	if !a.noDefaultDeny {
		for _, r := range defaultDeny {
			if r.Matches(ap) {
				return &deniedError{Addr: ap, Rule: "default deny " + r.String()}
			}
		}
		own := a.own
		if own == nil {
			own = ownAddrs
		}
		addr := canonAddr(ap.Addr())
		for _, o := range own() {
			if o == addr {
				return &deniedError{Addr: ap, Rule: "default deny: an address of this host"}
			}
		}
	}
	return nil
}

// ownAddrs lists this host's interface addresses (unmapped, without
// zones), read again at most every ownAddrsTTL.
func ownAddrs() []netip.Addr {
	ownMu.Lock()
	defer ownMu.Unlock()
	if time.Since(ownAt) < ownAddrsTTL && ownAt != (time.Time{}) {
		return ownList
	}
	ownAt = time.Now()
	ownList = ownList[:0:0]
	as, err := net.InterfaceAddrs()
	if err != nil {
		return ownList
	}
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				ownList = append(ownList, ip.Unmap().WithZone(""))
			}
		}
	}
	return ownList
}

const ownAddrsTTL = 10 * time.Second

var (
	ownMu   sync.Mutex
	ownAt   time.Time
	ownList []netip.Addr
)

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
