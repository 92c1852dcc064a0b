package runner

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"usocks/wire"
)

// DemoOptions shapes `usocks demo`.
type DemoOptions struct {
	Streams int // concurrent streams in the self-test
	Bytes   int // bytes echoed per stream
	Once    bool
	Out     io.Writer
}

// Demo runs a client, a server and an echo target on loopback, all with
// free ports and a fresh key; it moves data through the tunnel, checks
// every byte, prints what it did and how to try it by hand, and keeps
// serving until ctx is done (or returns at once with Once).
func Demo(ctx context.Context, logger *logrus.Logger, o DemoOptions) error {
	out := o.Out
	echo, err := StartEcho()
	if err != nil {
		return err
	}
	defer echo.Close()
	key, err := wire.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(echo.Addr())
	tport, _ := strconv.Atoi(port)

	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = sln.Close()
		return err
	}
	sport := sln.Addr().(*net.TCPAddr).Port
	cport := cln.Addr().(*net.TCPAddr).Port
	scfg := &ServerConfig{Common: Common{Key: key, Backend: BackendConfig{Address: "127.0.0.1", Port: sport}},
		Frontend: FrontendConfig{Type: "redirect", Server: host, Port: tport}}
	ccfg := &ClientConfig{Common: Common{Key: key, Backend: BackendConfig{Server: "127.0.0.1", Port: sport}},
		Address: "127.0.0.1", Port: cport}
	srv, err := NewServer(scfg, logger)
	if err != nil {
		return err
	}
	cli, err := NewClient(ccfg, logger)
	if err != nil {
		return err
	}
	srv.UseListener(sln)
	cli.UseListener(cln)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return srv.Run(gctx) })
	g.Go(func() error { return cli.Run(gctx) })

	fmt.Fprintf(out, "usocks demo: app -> client %s => server %s -> echo target %s\n", cln.Addr(), sln.Addr(), echo.Addr())
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	var firstErr error
	for i := 0; i < o.Streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			d := net.Dialer{Timeout: 5 * time.Second}
			c, err := d.DialContext(gctx, "tcp", cln.Addr().String())
			if err == nil {
				var n int64
				n, err = EchoCheck(gctx, c, o.Bytes, uint64(i))
				_ = c.Close()
				mu.Lock()
				total += n
				mu.Unlock()
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("stream %d: %w", i, err)
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		stop()
		_ = g.Wait()
		return fmt.Errorf("demo self-test failed: %w", firstErr)
	}
	fmt.Fprintf(out, "moved %d streams x %d bytes through the tunnel and back in %v: every byte checked with SHA-256 (%.1f MB/s each way)\n",
		o.Streams, o.Bytes, el.Round(time.Millisecond), float64(total)/el.Seconds()/1e6)
	fmt.Fprintf(out, "sessions: %d, streams opened: %d, rejected handshakes: %d\n",
		srv.Sessions.Load(), srv.Stats.StreamsOpened.Load(), srv.Rejected.Load())
	if o.Once {
		stop()
		return g.Wait()
	}
	fmt.Fprintf(out, "\nThe tunnel stays up. Try it by hand (anything you type comes back through the tunnel):\n")
	fmt.Fprintf(out, "    nc %s %d\n", "127.0.0.1", cport)
	fmt.Fprintf(out, "Press Ctrl-C to stop.\n")
	<-gctx.Done()
	return g.Wait()
}
