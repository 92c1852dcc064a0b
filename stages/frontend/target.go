package frontend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
)

// Client-chosen targets (SPEC-v2.md §6e): the client answered the app's
// proxy request itself and names the target in the SYN. The socks5 and
// http frontends, which let the app choose its target anyway, connect it
// with the same dialer and access rules; redirect refuses it (the stream
// is reset). A frontend with users refuses it too: the client-side proxy
// cannot pass on credentials, so it would bypass them.

// errTargetNeedsAuth refuses a SYN target on a frontend with users.
var errTargetNeedsAuth = errors.New("client-chosen target refused: this frontend requires proxy authentication")

// TargetHost is t's host in the form Dialer.Dial takes; an error for a
// name that is not a valid host name.
func TargetHost(t wire.Target) (string, error) {
	switch t.Type {
	case wire.TargetIPv4:
		return netip.AddrFrom4([4]byte(t.Addr)).String(), nil
	case wire.TargetIPv6:
		return netip.AddrFrom16([16]byte(t.Addr)).String(), nil
	}
	if h := string(t.Addr); validHost(h) {
		return h, nil
	}
	return "", fmt.Errorf("invalid target name %q", t.Addr)
}

// EncodeTarget is the SYN payload naming host:port (an IP literal is sent
// as an address, anything else as a name).
func EncodeTarget(host string, port uint16) ([]byte, error) {
	t := wire.Target{Type: wire.TargetName, Addr: []byte(host), Port: port}
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
		if a = a.Unmap(); a.Is4() {
			a4 := a.As4()
			t.Type, t.Addr = wire.TargetIPv4, a4[:]
		} else {
			a16 := a.As16()
			t.Type, t.Addr = wire.TargetIPv6, a16[:]
		}
	}
	return wire.AppendTarget(nil, t)
}

// openTarget connects a client-chosen target; any error resets the stream.
func openTarget(ctx context.Context, d *Dialer, users map[string]string, log *logrus.Entry, t wire.Target) (net.Conn, error) {
	if len(users) > 0 {
		log.Info(errTargetNeedsAuth.Error())
		return nil, errTargetNeedsAuth
	}
	host, err := TargetHost(t)
	if err != nil {
		log.WithError(err).Debug("SYN target refused")
		return nil, err
	}
	log = log.WithField("target", net.JoinHostPort(host, fmt.Sprint(t.Port)))
	c, err := dialerOr(d).Dial(ctx, host, t.Port)
	if err != nil {
		if classifyDialError(err) == failDenied {
			log.WithError(err).Info("SYN target denied")
		} else {
			log.WithError(err).Debug("SYN target dial failed")
		}
		return nil, err
	}
	return c, nil
}

// OpenTarget connects a target named in the SYN (stages.TargetFrontend).
func (f *Socks5) OpenTarget(ctx context.Context, s stages.StreamIO, t wire.Target) (net.Conn, error) {
	return openTarget(ctx, f.Dialer, f.Users, f.log(s), t)
}

// OpenTarget connects a target named in the SYN (stages.TargetFrontend).
func (f *HTTPProxy) OpenTarget(ctx context.Context, s stages.StreamIO, t wire.Target) (net.Conn, error) {
	log := frontendLog(f.Log).WithFields(logrus.Fields{"stream": s.ID(), "frontend": "http"})
	return openTarget(ctx, f.Dialer, f.Users, log, t)
}
