package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"usocks/wire"
)

// Tunnel keys, in table order.
const (
	Direct = "direct"
	SS     = "ss"
	SB     = "sb"    // sing-box, Shadowsocks 2022
	SBMux  = "sbmux" // sing-box, Shadowsocks 2022 with smux
	V2Off  = "v2off" // usocks v2 with `defense: off`
	// V2OffNoResume is V2Off without resumable sessions (no resend
	// stage, no ACK frames): only when asked for by name.
	V2OffNoResume = "v2off-noresume"
	V2            = "v2" // usocks v2 with the default defence policy
	V1            = "v1"
)

// AllTunnels is every tunnel of a full run, in table order.
var AllTunnels = []string{Direct, SS, SB, SBMux, V2Off, V2, V1}

// tableOrder is every tunnel the bench knows, in table order.
var tableOrder = []string{Direct, SS, SB, SBMux, V2Off, V2OffNoResume, V2, V1}

// tunnelName is a tunnel's row label.
func tunnelName(key string) string {
	switch key {
	case Direct:
		return "direct TCP"
	case SS:
		return "shadowsocks-libev"
	case SB:
		return "sing-box SS-2022"
	case SBMux:
		return "sing-box SS-2022 + smux"
	case V2Off:
		return "usocks v2 defense off"
	case V2OffNoResume:
		return "usocks v2 defense off, no resume"
	case V2:
		return "usocks v2 default"
	case V1:
		return "usocks v1"
	}
	return key
}

// SSMethod is shadowsocks-libev's cipher in the bench.
const SSMethod = "aes-256-gcm"

// ParseTunnels reads a comma-separated list of tunnel keys ("all" for
// every one), keeping table order and dropping repeats.
func ParseTunnels(s string) ([]string, error) {
	want := map[string]bool{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		switch f {
		case "":
		case "all":
			for _, k := range AllTunnels {
				want[k] = true
			}
		case "shadowsocks", "shadowsocks-libev", "ss-libev":
			want[SS] = true
		case "sing-box":
			want[SB], want[SBMux] = true, true
		case Direct, SS, SB, SBMux, V2Off, V2OffNoResume, V2, V1:
			want[f] = true
		default:
			return nil, fmt.Errorf("unknown tunnel %q (want direct, ss, sb, sbmux, v2off, v2, v1 or all)", f)
		}
	}
	var out []string
	for _, k := range tableOrder {
		if want[k] {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no tunnel chosen")
	}
	return out, nil
}

// errUnavailable marks a tunnel that could not be started: its row says
// n/a with the reason.
type errUnavailable struct{ reason string }

func (e *errUnavailable) Error() string { return e.reason }

func unavailable(format string, a ...any) error {
	return &errUnavailable{fmt.Sprintf(format, a...)}
}

// setup is a started tunnel: the target, and the tunnel's client and
// server (nil for direct TCP).
type setup struct {
	addr           string // where the load generator connects
	target         *proc
	client, server *proc
}

func (s *setup) stop() {
	// Client first, so that the server sees its tunnel close.
	s.client.stop(3 * time.Second)
	s.server.stop(3 * time.Second)
	s.target.stop(3 * time.Second)
}

// startTunnel starts the target and the tunnel key, and waits until a
// stream goes through end to end.
func (b *bencher) startTunnel(ctx context.Context, key string) (_ *setup, err error) {
	s := &setup{}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	switch key {
	case SS:
		if _, _, err := ssBinaries(); err != nil {
			return s, err
		}
	case SB, SBMux:
		if _, err := singBoxBinary(); err != nil {
			return s, err
		}
	}
	if s.target, s.addr, err = b.startTarget(ctx); err != nil {
		return s, err
	}
	targetAddr := s.addr
	switch key {
	case Direct:
		return s, nil
	case SS:
		err = b.startSS(ctx, s, targetAddr)
	case SB, SBMux:
		err = b.startSingBox(ctx, s, key == SBMux, targetAddr)
	case V2Off, V2OffNoResume, V2, V1:
		err = b.startUsocks(ctx, s, key, targetAddr)
	default:
		err = fmt.Errorf("unknown tunnel %q", key)
	}
	if err != nil {
		return s, err
	}
	// The tunnel is ready when a stream reaches the target and back.
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		c, perr := openEcho(ctx, s.addr)
		if perr == nil {
			_ = c.Close()
			return s, nil
		}
		for _, p := range []*proc{s.client, s.server} {
			if p.exited() {
				return s, unavailable("%s exited: %s", p.name, p.reason())
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return s, fmt.Errorf("no stream through the tunnel: %w", perr)
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(i+1)*20*time.Millisecond, 200*time.Millisecond)):
		}
	}
}

// startTarget starts `usocks bench target` on CPU 1 and reads its address.
func (b *bencher) startTarget(ctx context.Context) (*proc, string, error) {
	pr, pw := io.Pipe()
	p, err := startProc("target", b.taskset, 1, b.exe, []string{"bench", "target", "--listen", "127.0.0.1:0",
		"--max-time", b.opts.Budget.String()}, pw)
	if err != nil {
		return nil, "", err
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		<-p.done
		_ = pw.Close()
	}()
	select {
	case addr, ok := <-line:
		if ok {
			return p, addr, nil
		}
		p.stop(time.Second)
		return nil, "", fmt.Errorf("target: %s", p.reason())
	case <-time.After(10 * time.Second):
		p.stop(time.Second)
		return nil, "", errors.New("target: no address after 10s")
	case <-ctx.Done():
		p.stop(time.Second)
		return nil, "", ctx.Err()
	}
}

// startUsocks writes a config and starts `usocks server` (CPU 1) and
// `usocks client` (CPU 0).
func (b *bencher) startUsocks(ctx context.Context, s *setup, key, targetAddr string) error {
	psk, err := wire.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	sport, cport, err := twoPorts()
	if err != nil {
		return err
	}
	thost, tport, err := net.SplitHostPort(targetAddr)
	if err != nil {
		return err
	}
	protocol, defense := key, ""
	switch key {
	case V2Off:
		protocol, defense = V2, "off"
	case V2OffNoResume:
		protocol, defense = V2, "off"
	case V2:
		defense = "standard"
	}
	cfg := usocksConfig(protocol, defense, psk, sport, cport, thost, tport)
	if key == V2OffNoResume {
		cfg = strings.ReplaceAll(cfg, "\n  key: ", "\n  resume_timeout: -1s\n  key: ")
	}
	file := filepath.Join(b.dir, "usocks-"+key+".yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		return err
	}
	logArgs := []string{"-c", file, "--log-level", "warn"}
	return b.startPair(ctx, s, "usocks "+key, b.exe, append([]string{"server"}, logArgs...), sport,
		b.exe, append([]string{"client"}, logArgs...), cport)
}

// startPair starts a tunnel's server (CPU 1) and, once it listens on
// sport, its client (CPU 0), and waits for the client to listen on cport,
// the tunnel's entry.
func (b *bencher) startPair(ctx context.Context, s *setup, name, sexe string, sargs []string, sport int,
	cexe string, cargs []string, cport int) (err error) {
	if s.server, err = startProc(name+" server", b.taskset, 1, sexe, sargs, nil); err != nil {
		return err
	}
	if err := waitListening(ctx, s.server, sport, 15*time.Second); err != nil {
		return asUnavailable(s.server, err)
	}
	if s.client, err = startProc(name+" client", b.taskset, 0, cexe, cargs, nil); err != nil {
		return err
	}
	if err := waitListening(ctx, s.client, cport, 15*time.Second); err != nil {
		return asUnavailable(s.client, err)
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cport))
	return nil
}

// usocksConfig is the YAML for both sides of one usocks tunnel; defense
// is the policy the client asks for ("" for none: v1).
func usocksConfig(protocol, defense, key string, sport, cport int, thost, tport string) string {
	dl := ""
	if defense != "" {
		dl = "\n  defense: " + defense
	}
	return fmt.Sprintf(`# usocks bench, protocol %[1]s
client:
  backend: {type: plain_tcp, server: 127.0.0.1, port: %[3]d}
  key: %[2]q
  protocol: %[1]s%[7]s
  address: 127.0.0.1
  port: %[4]d
server:
  backend: {type: plain_tcp, address: 127.0.0.1, port: %[3]d}
  frontend: {type: redirect, server: %[5]s, port: %[6]s}
  key: %[2]q
  protocol: %[1]s
  probe_timeout: 10s
  session_dial_rate: %[8]d
`, protocol, key, sport, cport, thost, tport, dl, BenchDialRate)
}

// BenchDialRate lifts the server's session_dial_rate (default 1000 dials
// a second per session, a limit on authenticated peers) so that the
// new-streams workload measures the tunnel, not the limit; the report
// says so.
const BenchDialRate = 1 << 20

// asUnavailable turns a start-up failure of a process that exited into
// an n/a row with its reason.
func asUnavailable(p *proc, err error) error {
	if p.exited() {
		return unavailable("%s exited: %s", p.name, p.reason())
	}
	return err
}

// ssBinaries finds ss-server and ss-tunnel in PATH.
func ssBinaries() (server, tunnel string, err error) {
	server, err1 := exec.LookPath("ss-server")
	tunnel, err2 := exec.LookPath("ss-tunnel")
	if err1 != nil || err2 != nil {
		return "", "", unavailable("shadowsocks-libev not installed")
	}
	return server, tunnel, nil
}

// startSS starts ss-server (CPU 1) and ss-tunnel (CPU 0) forwarding to the
// target, with TCP_NODELAY as usocks has it.
func (b *bencher) startSS(ctx context.Context, s *setup, targetAddr string) error {
	server, tunnel, err := ssBinaries()
	if err != nil {
		return err
	}
	sport, cport, err := twoPorts()
	if err != nil {
		return err
	}
	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(map[string]any{
		"server":        "127.0.0.1",
		"server_port":   sport,
		"local_address": "127.0.0.1",
		"local_port":    cport,
		"password":      hex.EncodeToString(pw[:]),
		"method":        SSMethod,
		"timeout":       300,
		"mode":          "tcp_only",
	}, "", "  ")
	if err != nil {
		return err
	}
	file := filepath.Join(b.dir, "ss.json")
	if err := os.WriteFile(file, cfg, 0o600); err != nil {
		return err
	}
	return b.startPair(ctx, s, "shadowsocks-libev", server, []string{"-c", file, "--no-delay"}, sport,
		tunnel, []string{"-c", file, "-L", targetAddr, "--no-delay"}, cport)
}
