package runner

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"usocks/stages/frontend"
)

// Client-side proxy mode (SPEC-v2.md §6e): the client answers SOCKS5 and
// HTTP proxy requests itself and sends the target in the SYN; the
// server's socks5/http frontend dials it under its access rules.

// clientProxyTunnel starts a tunnel whose client listens as listen and
// whose server uses fc.
func clientProxyTunnel(t testing.TB, listen string, fc FrontendConfig) (*tunnel, string) {
	t.Helper()
	tn := startTunnel(t, tunnelOpts{frontend: &fc, listen: listen})
	tn.waitSession()
	return tn, tn.cli.Addr().String()
}

func TestClientProxySocks5(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	tn, proxy := clientProxyTunnel(t, "socks5", FrontendConfig{Type: "socks5", Allow: loopbackOnly})
	for _, n := range []int{0, 1, 100_000, 3 << 20} {
		checkBlob(t, o, n, "--socks5-hostname", proxy)
	}
	checkBlob(t, o, 70_000, "--socks5", proxy)
	// The app's request and data in one write, as a 0-RTT SOCKS client
	// sends them: the reply and the response follow.
	host, port := o.hostPort()
	get := "GET /blob/5000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	got, reset := exchange(t, proxy, append(socksConnect(host, port), get...))
	want := append([]byte{5, 0}, frontend.AppendSocksReply(nil, 0, netip.AddrPort{})...)
	if reset || !bytes.HasPrefix(got, want) || !bytes.HasSuffix(got, blob(5000)) {
		t.Fatalf("pipelined request: reset %v, %d bytes %q…", reset, len(got), got[:min(len(got), 40)])
	}
	// Refusals answered by the client itself, byte for byte.
	for _, c := range []struct {
		name       string
		send, want []byte
	}{
		{"bind", []byte{5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80}, socksRefusal(frontend.SocksCmdNotSupported)},
		{"udp associate", []byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}, socksRefusal(frontend.SocksCmdNotSupported)},
		{"address type 9", []byte{5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80}, socksRefusal(frontend.SocksAtypNotSupported)},
		{"user/pass only", []byte{5, 1, 2}, []byte{5, 0xff}},
	} {
		if got, _ := exchange(t, proxy, c.send); !bytes.Equal(got, c.want) {
			t.Errorf("%s: got %x, want %x", c.name, got, c.want)
		}
	}
	// A refused dial: the optimistic reply, then a reset (no data).
	got, reset = exchange(t, proxy, append(socksConnect("127.0.0.1", closedLoopbackPort(t)), get...))
	if !bytes.Equal(got, want) || !reset {
		t.Errorf("refused target: got %x (reset %v), want %x then a reset", got, reset, want)
	}
	if n := tn.srv.Sessions.Load(); n != 1 {
		t.Errorf("sessions = %d, want 1 (refusals reset streams, not the tunnel)", n)
	}
}

func TestClientProxyHTTP(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	_, proxy := clientProxyTunnel(t, "http", FrontendConfig{Type: "http", Allow: loopbackOnly})
	for _, n := range []int{0, 100_000, 3 << 20} {
		checkBlob(t, o, n, "-p", "-x", "http://"+proxy) // CONNECT
		checkBlob(t, o, n, "-x", "http://"+proxy)       // plain GET
	}
	// The plain request reaches the origin rewritten: origin form, Host
	// from the URI, hop headers gone, Connection: close.
	r := runCurl(t, "-x", "http://"+proxy, "-H", "Proxy-Connection: keep-alive", o.url("/headers"))
	host, port := o.hostPort()
	if r.code != 0 || !strings.HasPrefix(string(r.out), fmt.Sprintf("Host: %s:%d\n", host, port)) || strings.Contains(string(r.out), "Proxy-Connection") {
		t.Errorf("headers through the client-side http proxy: exit %d %q", r.code, r.out)
	}
	// Refused by the client itself.
	if got, _ := exchange(t, proxy, []byte("GET https://x/ HTTP/1.1\r\n\r\n")); !bytes.HasPrefix(got, []byte("HTTP/1.1 501 ")) {
		t.Errorf("https in a plain request: got %q, want 501", got)
	}
}

func TestClientProxyMixed(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	_, proxy := clientProxyTunnel(t, "mixed", FrontendConfig{Type: "socks5", Allow: loopbackOnly})
	checkBlob(t, o, 200_000, "--socks5-hostname", proxy)
	checkBlob(t, o, 200_000, "-p", "-x", "http://"+proxy)
	checkBlob(t, o, 200_000, "-x", "http://"+proxy)
	checkBlob(t, o, 200_000, "-x", "socks5://"+proxy)
}

// The server decides: its access rules (default deny), a redirect
// frontend, and a frontend with users all refuse client-chosen targets;
// the app's connection fails and the tunnel lives on.
func TestClientProxyServerDecides(t *testing.T) {
	requireCurl(t)
	o := startOrigin(t)
	for _, c := range []struct {
		name string
		fc   FrontendConfig
	}{
		{"default deny", FrontendConfig{Type: "socks5"}},
		{"denied by rule", FrontendConfig{Type: "http", Allow: loopbackOnly, Deny: []string{"127.0.0.0/8"}}},
		{"redirect", FrontendConfig{Type: "redirect", Server: "127.0.0.1", Port: int(closedLoopbackPort(t))}},
		{"users", FrontendConfig{Type: "socks5", Allow: loopbackOnly, Users: map[string]string{"alice": "pw"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tn, proxy := clientProxyTunnel(t, "mixed", c.fc)
			for _, args := range [][]string{{"--socks5-hostname", proxy}, {"-p", "-x", "http://" + proxy}, {"-x", "http://" + proxy}} {
				if r := runCurl(t, append(args, o.url("/small"))...); r.code == 0 {
					t.Errorf("curl %v succeeded: %q", args, r.out)
				}
			}
			// The tunnel still carries streams: the app sees a clean
			// failure of its own connection only.
			c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = c.Write([]byte{5, 1, 0})
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var b [2]byte
			if _, err := io.ReadFull(c, b[:]); err != nil || b != [2]byte{5, 0} {
				t.Errorf("greeting after refusals: %x %v", b, err)
			}
			_ = c.Close()
			if n := tn.srv.Sessions.Load(); n != 1 {
				t.Errorf("sessions = %d, want 1", n)
			}
		})
	}
	if n := o.requests.Load(); n != 0 {
		t.Errorf("the origin saw %d requests through refusing servers", n)
	}
}
