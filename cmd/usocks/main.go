// Command usocks is the usocks tunnel: client, server, key generation,
// capture replay and a self-contained demo. It only parses flags; the
// runner package does the work.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"usocks/runner"
	"usocks/wire"
)

const usage = `usocks: an encrypted TCP tunnel with a pre-shared key

usage:
  usocks genkey                      print a new random key
  usocks server -c FILE [flags]      run the server section of FILE
  usocks client -c FILE [flags]      run the client section of FILE
  usocks demo [--once]               client, server and echo target on loopback
  usocks bench [flags]               compare throughput and latency on loopback
  usocks replay FILE [flags]         list a capture file (--key K, --stream N,
                                     --dir in|out, --json; see usocks replay -h)

flags (server, client, demo):
  -c FILE          config file (YAML; see testdata/config/sample.yaml)
  --log-level L    trace, debug, info (default), warn, error
  --log-json       log JSON lines instead of text
  -v               same as --log-level debug
  --capture PATH   (server, client) record every session to PATH for replay
  --capture-plaintext  with --capture: also record payloads and session keys
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "genkey":
		var k string
		if k, err = wire.GenerateKey(rand.Reader); err == nil {
			fmt.Fprintln(stdout, k)
		}
	case "server", "client", "demo":
		err = serve(ctx, args[0], args[1:], stdout, stderr)
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "replay":
		err = runReplay(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "usocks: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "usocks: %v\n", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "config file")
	level := fs.String("log-level", "info", "log level")
	jsonLog := fs.Bool("log-json", false, "JSON logs")
	verbose := fs.Bool("v", false, "debug logging")
	once := fs.Bool("once", false, "demo: run the self-test and exit")
	streams := fs.Int("streams", 8, "demo: concurrent streams in the self-test")
	size := fs.Int("bytes", 1<<20, "demo: bytes echoed per stream")
	capture := fs.String("capture", "", "server, client: record every session to this file")
	capturePlain := fs.Bool("capture-plaintext", false, "with --capture: also record payloads and session keys")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", cmd, fs.Arg(0))
	}
	if *verbose {
		*level = "debug"
	}
	logger, err := runner.NewLogger(*level, *jsonLog, stderr)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if cmd == "demo" {
		if *file != "" {
			return errors.New("demo: takes no config file")
		}
		if *capture != "" || *capturePlain {
			return errors.New("demo: --capture is for client and server")
		}
		if !*once && !*verbose && *level == "info" {
			// The demo prints its own summary; only problems are logged
			// unless a level was asked for.
			logger.SetLevel(logrus.WarnLevel)
		}
		return runner.Demo(ctx, logger, runner.DemoOptions{Streams: *streams, Bytes: *size, Once: *once, Out: stdout})
	}
	if *file == "" {
		return fmt.Errorf("%s: -c FILE is required", cmd)
	}
	cfg, err := runner.LoadConfig(*file)
	if err != nil {
		return err
	}
	if *capturePlain && *capture == "" {
		return fmt.Errorf("%s: --capture-plaintext needs --capture PATH", cmd)
	}
	if cmd == "server" {
		if cfg.Server == nil {
			return fmt.Errorf("%s: no server: section", *file)
		}
		if *capture != "" {
			cfg.Server.Capture, cfg.Server.CapturePlaintext = *capture, *capturePlain
		}
		s, err := runner.NewServer(cfg.Server, logger)
		if err != nil {
			return err
		}
		return s.Run(ctx)
	}
	if cfg.Client == nil {
		return fmt.Errorf("%s: no client: section", *file)
	}
	if *capture != "" {
		cfg.Client.Capture, cfg.Client.CapturePlaintext = *capture, *capturePlain
	}
	c, err := runner.NewClient(cfg.Client, logger)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}
