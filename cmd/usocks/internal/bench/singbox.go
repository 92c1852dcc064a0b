package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SBMethod is sing-box's cipher in the bench: Shadowsocks 2022.
const SBMethod = "2022-blake3-aes-256-gcm"

// singBoxBinary finds sing-box in PATH or in $GOPATH/bin (where `go
// install` puts it).
func singBoxBinary() (string, error) {
	if p, err := exec.LookPath("sing-box"); err == nil {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output(); err == nil {
		for dir := range strings.SplitSeq(strings.TrimSpace(string(out)), string(os.PathListSeparator)) {
			p := filepath.Join(dir, "bin", "sing-box")
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, nil
			}
		}
	}
	return "", unavailable("sing-box not installed")
}

// singBoxVersion is the first line of `sing-box version`.
func singBoxVersion() string {
	exe, err := singBoxBinary()
	if err != nil {
		return "sing-box"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, exe, "version").Output()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" || strings.Contains(line, "unknown") {
		// `go install` builds carry no version string: name the one the
		// bench installs.
		return "sing-box 1.14.1 (go install)"
	}
	return line
}

// singBoxConfigs are the server's and the client's JSON: a Shadowsocks
// 2022 inbound on the server with a direct outbound; on the client a
// direct inbound that forwards every connection to the target through a
// Shadowsocks 2022 outbound, with smux multiplexing if mux.
func singBoxConfigs(mux bool, psk string, sport, cport int, thost string, tport int) (server, client []byte, err error) {
	log := map[string]any{"level": "warn", "timestamp": false}
	in := map[string]any{"type": "shadowsocks", "listen": "127.0.0.1", "listen_port": sport,
		"method": SBMethod, "password": psk, "tcp_fast_open": false}
	out := map[string]any{"type": "shadowsocks", "server": "127.0.0.1", "server_port": sport,
		"method": SBMethod, "password": psk}
	if mux {
		in["multiplex"] = map[string]any{"enabled": true}
		out["multiplex"] = map[string]any{"enabled": true, "protocol": "smux", "max_connections": 1}
	}
	server, err = json.MarshalIndent(map[string]any{"log": log, "inbounds": []any{in},
		"outbounds": []any{map[string]any{"type": "direct"}}}, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	local := map[string]any{"type": "direct", "listen": "127.0.0.1", "listen_port": cport,
		"override_address": thost, "override_port": tport}
	client, err = json.MarshalIndent(map[string]any{"log": log, "inbounds": []any{local},
		"outbounds": []any{out}}, "", "  ")
	return server, client, err
}

// startSingBox starts a sing-box server (CPU 1) and client (CPU 0)
// forwarding to the target.
func (b *bencher) startSingBox(ctx context.Context, s *setup, mux bool, targetAddr string) error {
	exe, err := singBoxBinary()
	if err != nil {
		return err
	}
	sport, cport, err := twoPorts()
	if err != nil {
		return err
	}
	thost, tp, err := net.SplitHostPort(targetAddr)
	if err != nil {
		return err
	}
	tport, err := strconv.Atoi(tp)
	if err != nil {
		return err
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return err
	}
	srv, cli, err := singBoxConfigs(mux, base64.StdEncoding.EncodeToString(key[:]), sport, cport, thost, tport)
	if err != nil {
		return err
	}
	name := "sing-box"
	if mux {
		name += "-mux"
	}
	sfile := filepath.Join(b.dir, name+"-server.json")
	cfile := filepath.Join(b.dir, name+"-client.json")
	if err := errors.Join(os.WriteFile(sfile, srv, 0o600), os.WriteFile(cfile, cli, 0o600)); err != nil {
		return err
	}
	return b.startPair(ctx, s, name, exe, []string{"run", "-c", sfile, "--disable-color"}, sport,
		exe, []string{"run", "-c", cfile, "--disable-color"}, cport)
}
