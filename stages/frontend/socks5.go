package frontend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"usocks/stages"
)

// The SOCKS5 frontend (RFC 1928, with RFC 1929 username/password): the app
// speaks SOCKS5 through its stream; the server dials what it asks for.
// CONNECT and (when enabled) UDP ASSOCIATE are served; BIND gets "command
// not supported".

// SOCKS5 protocol numbers.
const (
	socksVersion         = 5
	socksUserPassVersion = 1

	socksAuthNone         byte = 0x00
	socksAuthUserPass     byte = 0x02
	socksAuthNoAcceptable byte = 0xff

	SocksCmdConnect      byte = 1
	SocksCmdBind         byte = 2
	SocksCmdUDPAssociate byte = 3

	SocksAtypIPv4   byte = 1
	SocksAtypDomain byte = 3
	SocksAtypIPv6   byte = 4
)

// SOCKS5 reply codes (RFC 1928 section 6).
const (
	SocksSucceeded        byte = 0
	SocksGeneralFailure   byte = 1
	SocksNotAllowed       byte = 2
	SocksNetUnreachable   byte = 3
	SocksHostUnreachable  byte = 4
	SocksConnRefused      byte = 5
	SocksTTLExpired       byte = 6
	SocksCmdNotSupported  byte = 7
	SocksAtypNotSupported byte = 8
)

// errSocksVersion is input that is not SOCKS5 at all.
var errSocksVersion = errors.New("socks5: wrong protocol version")

// socksError is a request that gets the reply Code and then a close.
type socksError struct {
	Code byte
	Msg  string
}

func (e *socksError) Error() string { return fmt.Sprintf("socks5: %s (reply %d)", e.Msg, e.Code) }

// SocksRequest is a parsed SOCKS5 request.
type SocksRequest struct {
	Cmd  byte
	Atyp byte
	// Host is the IP address in text form (Atyp 1 or 4) or the name as
	// sent (Atyp 3).
	Host string
	Port uint16
}

// readSocksGreeting reads VER NMETHODS METHODS and returns the methods.
// It reads exactly the greeting's bytes.
func readSocksGreeting(r io.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if h[0] != socksVersion {
		return nil, errSocksVersion
	}
	m := make([]byte, h[1])
	if _, err := io.ReadFull(r, m); err != nil {
		return nil, err
	}
	return m, nil
}

// readSocksUserPass reads an RFC 1929 request: VER ULEN UNAME PLEN PASSWD.
// A wrong VER is a *socksError (the caller answers with failure).
func readSocksUserPass(r io.Reader) (user, pass string, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", "", err
	}
	if h[0] != socksUserPassVersion {
		return "", "", &socksError{Code: 1, Msg: fmt.Sprintf("username/password version %d", h[0])}
	}
	// ULEN ≤ 255, PLEN ≤ 255 and its own length byte: one bounded buffer.
	buf := make([]byte, int(h[1])+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", "", err
	}
	user = string(buf[:h[1]])
	p := make([]byte, buf[h[1]])
	if _, err := io.ReadFull(r, p); err != nil {
		return "", "", err
	}
	return user, string(p), nil
}

// readSocksRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT, exactly. A
// request that can be answered (unknown address type, bad name) is a
// *socksError; errSocksVersion and read errors mean "just close". The
// command is returned as sent: the caller decides what it serves.
func readSocksRequest(r io.Reader) (SocksRequest, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return SocksRequest{}, err
	}
	if h[0] != socksVersion {
		return SocksRequest{}, errSocksVersion
	}
	req := SocksRequest{Cmd: h[1], Atyp: h[3]}
	var a [16 + 2]byte
	switch req.Atyp {
	case SocksAtypIPv4:
		if _, err := io.ReadFull(r, a[:4+2]); err != nil {
			return SocksRequest{}, err
		}
		req.Host = netip.AddrFrom4([4]byte(a[:4])).String()
		req.Port = binary.BigEndian.Uint16(a[4:6])
	case SocksAtypIPv6:
		if _, err := io.ReadFull(r, a[:16+2]); err != nil {
			return SocksRequest{}, err
		}
		req.Host = netip.AddrFrom16([16]byte(a[:16])).String()
		req.Port = binary.BigEndian.Uint16(a[16:18])
	case SocksAtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return SocksRequest{}, err
		}
		b := make([]byte, int(n[0])+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return SocksRequest{}, err
		}
		req.Host = string(b[:n[0]])
		req.Port = binary.BigEndian.Uint16(b[n[0]:])
		if n[0] == 0 {
			return req, &socksError{Code: SocksGeneralFailure, Msg: "empty domain name"}
		}
		if !validHost(req.Host) {
			return req, &socksError{Code: SocksHostUnreachable, Msg: fmt.Sprintf("invalid domain name %q", req.Host)}
		}
	default:
		return req, &socksError{Code: SocksAtypNotSupported, Msg: fmt.Sprintf("address type %d", req.Atyp)}
	}
	return req, nil
}

// AppendSocksRequest encodes req (the client's side; tests and tools).
func AppendSocksRequest(b []byte, req SocksRequest) []byte {
	b = append(b, socksVersion, req.Cmd, 0, req.Atyp)
	switch req.Atyp {
	case SocksAtypIPv4, SocksAtypIPv6:
		a, _ := netip.ParseAddr(req.Host)
		if req.Atyp == SocksAtypIPv4 {
			a4 := a.Unmap().As4()
			b = append(b, a4[:]...)
		} else {
			a16 := a.As16()
			b = append(b, a16[:]...)
		}
	default:
		b = append(b, byte(len(req.Host)))
		b = append(b, req.Host...)
	}
	return binary.BigEndian.AppendUint16(b, req.Port)
}

// AppendSocksReply encodes a reply: VER REP RSV ATYP BND.ADDR BND.PORT.
// An invalid bound address is sent as 0.0.0.0:0.
func AppendSocksReply(b []byte, code byte, bound netip.AddrPort) []byte {
	b = append(b, socksVersion, code, 0)
	a := bound.Addr().Unmap()
	switch {
	case a.Is4():
		a4 := a.As4()
		b = append(b, SocksAtypIPv4)
		b = append(b, a4[:]...)
	case a.Is6():
		a16 := a.As16()
		b = append(b, SocksAtypIPv6)
		b = append(b, a16[:]...)
	default:
		b = append(b, SocksAtypIPv4, 0, 0, 0, 0)
		return append(b, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, bound.Port())
}

// socksReplyCode maps a dial failure to its reply code.
func socksReplyCode(f dialFailure) byte {
	switch f {
	case failDenied:
		return SocksNotAllowed
	case failNetUnreachable:
		return SocksNetUnreachable
	case failHostUnreachable:
		return SocksHostUnreachable
	case failRefused:
		return SocksConnRefused
	case failTimeout:
		return SocksTTLExpired
	}
	return SocksGeneralFailure
}

// Socks5 is the SOCKS5 frontend.
type Socks5 struct {
	// Dialer connects to targets (nil: defaults with the default deny).
	Dialer *Dialer
	// Users, if not empty, makes username/password (RFC 1929) the only
	// method offered; otherwise only "no authentication" is.
	Users map[string]string
	// HandshakeTimeout bounds greeting, authentication and request
	// (default defaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// UDP serves UDP ASSOCIATE (datagrams as DATAGRAM frames, SPEC-v2.md
	// §6a); RefuseUDP443 drops datagrams to port 443 so that browsers give
	// up on QUIC and use TCP.
	UDP, RefuseUDP443 bool
	// UDPStats counts the associations' datagrams.
	UDPStats UDPStats
	Log      *logrus.Entry
}

// socksOutcome is how the request phase ended.
type socksOutcome struct {
	req  SocksRequest
	code byte // reply to send without dialing (0: dial req)
	done bool // the final answer was sent already
}

// Open runs the SOCKS5 exchange on s and returns the target connection.
// Refusals answer the app and then end the stream with a FIN; a stream
// that does not speak SOCKS5 is reset.
func (f *Socks5) Open(ctx context.Context, s stages.StreamIO) (net.Conn, error) {
	out, err := readRequest(ctx, f.HandshakeTimeout, func() (socksOutcome, error) { return f.handshake(s) })
	if err != nil {
		return nil, err
	}
	if out.done {
		return closedConn{}, nil
	}
	log := f.log(s).WithField("target", net.JoinHostPort(out.req.Host, fmt.Sprint(out.req.Port)))
	if out.code == 0 && out.req.Cmd == SocksCmdUDPAssociate {
		return f.associate(ctx, s, log)
	}
	if out.code != 0 {
		log.WithField("reply", out.code).Debug("socks5 request refused")
		return f.refuse(s, out.code)
	}
	c, err := dialerOr(f.Dialer).Dial(ctx, out.req.Host, out.req.Port)
	if err != nil {
		fail := classifyDialError(err)
		if fail == failDenied {
			log.WithError(err).Info("socks5 target denied")
		} else {
			log.WithError(err).Debug("socks5 dial failed")
		}
		return f.refuse(s, socksReplyCode(fail))
	}
	var bound netip.AddrPort
	if ta, ok := c.LocalAddr().(*net.TCPAddr); ok {
		bound = ta.AddrPort()
	}
	if _, err := s.Write(AppendSocksReply(nil, SocksSucceeded, bound)); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// associate serves UDP ASSOCIATE: a UDP socket of its own on the server,
// the app's datagrams over the tunnel. The client sends the SOCKS reply
// (it names the client's relay), so nothing is written here on success.
func (f *Socks5) associate(ctx context.Context, s stages.StreamIO, log *logrus.Entry) (net.Conn, error) {
	ds, ok := s.(stages.DatagramStream)
	if !ok {
		return f.refuse(s, SocksCmdNotSupported)
	}
	release, err := gateFrom(ctx).Socket()
	if err != nil {
		log.WithError(err).Debug("udp associate refused")
		return f.refuse(s, SocksGeneralFailure)
	}
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		release()
		log.WithError(err).Warn("udp associate: no socket")
		return f.refuse(s, SocksGeneralFailure)
	}
	in, err := ds.OpenAssociation()
	if err != nil {
		_ = pc.Close()
		release()
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	a := &association{s: ds, in: in, pc: pc, dialer: dialerOr(f.Dialer), refuse443: f.RefuseUDP443, log: log, stats: &f.UDPStats, release: release}
	go a.run(actx)
	log.Debug("udp association open")
	return newAssocConn(cancel), nil
}

func (f *Socks5) refuse(s stages.StreamIO, code byte) (net.Conn, error) {
	if _, err := s.Write(AppendSocksReply(nil, code, netip.AddrPort{})); err != nil {
		return nil, err
	}
	return closedConn{}, nil
}

func (f *Socks5) log(s stages.StreamIO) *logrus.Entry {
	return frontendLog(f.Log).WithFields(logrus.Fields{"stream": s.ID(), "frontend": "socks5"})
}

// handshake reads greeting, credentials and request.
func (f *Socks5) handshake(s stages.StreamIO) (socksOutcome, error) {
	methods, err := readSocksGreeting(s)
	if err != nil {
		return socksOutcome{}, err
	}
	want := socksAuthNone
	if len(f.Users) > 0 {
		want = socksAuthUserPass
	}
	offered := false
	for _, m := range methods {
		if m == want {
			offered = true
		}
	}
	if !offered {
		_, err := s.Write([]byte{socksVersion, socksAuthNoAcceptable})
		return socksOutcome{done: true}, err
	}
	if _, err := s.Write([]byte{socksVersion, want}); err != nil {
		return socksOutcome{}, err
	}
	if want == socksAuthUserPass {
		user, pass, err := readSocksUserPass(s)
		var se *socksError
		if err != nil && !errors.As(err, &se) {
			return socksOutcome{}, err
		}
		if err != nil || !checkCredentials(f.Users, user, pass) {
			f.log(s).WithField("user", user).Info("socks5 authentication failed")
			_, err := s.Write([]byte{socksUserPassVersion, 1})
			return socksOutcome{done: true}, err
		}
		if _, err := s.Write([]byte{socksUserPassVersion, 0}); err != nil {
			return socksOutcome{}, err
		}
	}
	req, err := readSocksRequest(s)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) {
			return socksOutcome{req: req, code: se.Code}, nil
		}
		if errors.Is(err, errSocksVersion) {
			return socksOutcome{req: req, code: SocksGeneralFailure}, nil
		}
		return socksOutcome{}, err
	}
	if req.Cmd != SocksCmdConnect && (req.Cmd != SocksCmdUDPAssociate || !f.UDP) {
		// BIND is not served; UDP ASSOCIATE only when enabled.
		return socksOutcome{req: req, code: SocksCmdNotSupported}, nil
	}
	return socksOutcome{req: req}, nil
}
