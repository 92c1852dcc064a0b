package runner

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// backendSuite is the end-to-end suite every wrapped backend must pass:
// concurrent checked streams, half-close, one session, and a clean close
// on shutdown.
func backendSuite(t *testing.T, o tunnelOpts) {
	tg := startTarget(t)
	o.targetPort = tg.port()
	tn := startTunnel(t, o)
	tn.waitSession()
	streams, size := 16, 1<<20
	if testing.Short() {
		streams, size = 8, 256<<10
	}
	echoMany(t, tn, streams, size)

	halfClose(t, tn, 300_000)

	if got := tn.srv.Sessions.Load(); got != 1 {
		t.Errorf("sessions = %d, want 1", got)
	}
	tn.cancel()
	<-tn.done
	if tn.srv.Clean.Load() != 1 || tn.srv.Failed.Load() != 0 {
		t.Fatalf("clean=%d failed=%d; want the session closed cleanly", tn.srv.Clean.Load(), tn.srv.Failed.Load())
	}
}

func TestWSBackend(t *testing.T) {
	t.Run("ws", func(t *testing.T) { backendSuite(t, tunnelOpts{backend: "ws", path: "/tunnel"}) })
	t.Run("wss", func(t *testing.T) { backendSuite(t, tunnelOpts{backend: "tls", path: "/tunnel"}) })
	t.Run("ws behind nginx", func(t *testing.T) {
		backendSuite(t, tunnelOpts{backend: "ws", path: "/tunnel", via: func(addr string) string { return startNginx(t, addr, "/tunnel") }})
	})
}

// TestWSVisitors: on a ws backend, every request that is not the tunnel's
// WebSocket upgrade gets the web site, and no session.
func TestWSVisitors(t *testing.T) {
	tg := startTarget(t)
	tn := startTunnel(t, tunnelOpts{targetPort: tg.port(), backend: "ws", path: "/tunnel"})
	tn.waitSession()
	// The client may see the server's reply before the server has counted
	// the session.
	waitFor(t, "the server to count the session", 5*time.Second, func() bool { return tn.srv.Sessions.Load() == 1 })
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for path, want := range map[string]int{"/": 200, "/tunnel": 404, "/other": 404} {
		resp, err := hc.Get("http://" + tn.serverAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || resp.Header.Get("Server") == "" {
			t.Errorf("GET %s: %d %q (server %q), want %d", path, resp.StatusCode, body, resp.Header.Get("Server"), want)
		}
	}
	// A WebSocket upgrade of another path is a visitor too.
	c, err := net.Dial("tcp", tn.serverAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("upgrade of another path: %v %v", resp, err)
	}
	waitFor(t, "the client's session", 5*time.Second, func() bool { return tn.srv.Sessions.Load() >= 1 })
	if got := tn.srv.Sessions.Load(); got != 1 {
		t.Fatalf("sessions = %d, want only the client's", got)
	}
}

// startNginx runs Debian's nginx as a reverse proxy on a free loopback
// port, passing WebSocket upgrades of path to backend; it returns the
// proxy's address.
func startNginx(t *testing.T, backend, path string) string {
	return runNginx(t, func(listen string) string {
		return fmt.Sprintf(wsProxyConf, listen, path, backend)
	})
}

// runNginx runs Debian's nginx with the server block server(listen) on a
// free loopback port, every other path in the test's directory, and stops
// it (by its PID) when the test ends. Without nginx the test is skipped,
// except in CI.
func runNginx(t *testing.T, server func(listen string) string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
			if _, e := os.Stat(p); e == nil {
				bin, err = p, nil
			}
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nginx is not installed (.ci/run installs it)")
		}
		t.Skip("nginx is not installed: skipping the test against nginx")
	}
	dir := t.TempDir()
	ln := listenLocal(t)
	addr := ln.Addr().String()
	ln.Close()
	conf := strings.ReplaceAll(nginxConf, "DIR", dir) + server(addr) + "}\n"
	if os.Geteuid() == 0 {
		// Workers read the test's private directories.
		conf = "user root;\n" + conf
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case <-exited:
			t.Fatalf("nginx exited: %s", out.String())
		case <-ctx.Done():
			t.Fatalf("nginx did not listen on %s: %s", addr, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// nginxConf is the frame of the test's nginx.conf (DIR: its directory);
// a server block and the closing brace follow.
const nginxConf = `worker_processes 1;
pid DIR/nginx.pid;
error_log DIR/error.log;
events { worker_connections 64; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log DIR/access.log;
  server_tokens off;
  client_body_temp_path DIR/body;
  proxy_temp_path DIR/proxy;
  fastcgi_temp_path DIR/fastcgi;
  uwsgi_temp_path DIR/uwsgi;
  scgi_temp_path DIR/scgi;
`

// wsProxyConf is the README's reverse-proxy config.
const wsProxyConf = `  server {
    listen %s;
    location %s {
      proxy_pass http://%s;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_read_timeout 1h;
      proxy_buffering off;
    }
  }
`
