package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"

	"usocks/runner"
)

const serverHelp = `usage: usocks server -c FILE [flags]

Runs the server section of FILE until SIGINT or SIGTERM.
`

const clientHelp = `usage: usocks client -c FILE [flags]
       usocks client --link LINK [--listen ADDR:PORT] [flags]

Runs the client section of FILE, or the client a share link describes
(usocks link makes one), until SIGINT or SIGTERM: apps connect to its
address and port, and each connection becomes a stream to the server.
`

const demoHelp = `usage: usocks demo [flags]

Runs a client, a server and an echo target on loopback with a fresh key,
moves data through the tunnel and checks every byte, then keeps serving
(or exits, with --once).
`

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level   *string
	json    *bool
	verbose *bool
}

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		level:   fs.String("log-level", "info", "log level: trace, debug, info, warn, error"),
		json:    fs.Bool("log-json", false, "log JSON lines instead of text"),
		verbose: fs.Bool("v", false, "same as --log-level debug"),
	}
}

func (l logFlags) logger(stderr io.Writer) (*logrus.Logger, error) {
	if *l.verbose {
		*l.level = "debug"
	}
	logger, err := runner.NewLogger(*l.level, *l.json, stderr)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return logger, nil
}

func serve(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if cmd == "demo" {
		return runDemo(ctx, fs, args, stdout, stderr)
	}
	file := fs.String("c", "", "config file (YAML; see testdata/config/sample.yaml)")
	lf := addLogFlags(fs)
	capture := fs.String("capture", "", "record every session to this file (for usocks replay)")
	capturePlain := fs.Bool("capture-plaintext", false, "with --capture: also record payloads and session keys")
	help := serverHelp
	var link, listen *string
	if cmd == "client" {
		help = clientHelp
		link = fs.String("link", "", "run from this usocks:// share link instead of a config file")
		listen = fs.String("listen", "", "where apps connect, ADDR:PORT (default: the config's address and port; 127.0.0.1:1080 with --link)")
	}
	if err := parseFlags(fs, help, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	// What the command line sets wins over the file, at start and on
	// every reload.
	flagLevel := false
	fs.Visit(func(f *flag.Flag) { flagLevel = flagLevel || f.Name == "log-level" || f.Name == "v" })
	override := func(c *runner.Config) error {
		var sections []*runner.Common
		if c.Client != nil {
			sections = append(sections, &c.Client.Common)
		}
		if c.Server != nil {
			sections = append(sections, &c.Server.Common)
		}
		for _, cm := range sections {
			if flagLevel {
				cm.LogLevel = ""
			}
			if *capture != "" {
				cm.Capture, cm.CapturePlaintext = *capture, *capturePlain
			}
		}
		if listen != nil && *listen != "" && c.Client != nil {
			return setListen(c.Client, *listen)
		}
		return nil
	}
	load := func() (*runner.Config, error) {
		c, err := runner.LoadConfig(*file)
		if err == nil {
			err = override(c)
		}
		return c, err
	}
	var cfg *runner.Config
	switch {
	case link != nil && *link != "":
		if *file != "" {
			return fmt.Errorf("%s: give -c FILE or --link, not both", cmd)
		}
		if cfg, err = clientFromLink(*link, *listen); err != nil {
			return err
		}
		load = nil
	case *file == "":
		return fmt.Errorf("%s: -c FILE is required", cmd)
	default:
		if cfg, err = load(); err != nil {
			return err
		}
		for _, w := range runner.FileWarnings(*file, cfg) {
			logger.Warn(w)
		}
	}
	if *capturePlain && *capture == "" {
		return fmt.Errorf("%s: --capture-plaintext needs --capture PATH", cmd)
	}
	if cmd == "server" {
		if cfg.Server == nil {
			return fmt.Errorf("%s: no server: section", *file)
		}
		s, err := runner.NewServer(cfg.Server, logger)
		if err != nil {
			return err
		}
		if err := s.Listen(); err != nil {
			return err
		}
		return runService(ctx, s.Run, func() { _, _ = s.Reload(warnFile(load, *file, logger)) }, logger)
	}
	if cfg.Client == nil {
		return fmt.Errorf("%s: no client: section", *file)
	}
	if load == nil && *capture != "" {
		cfg.Client.Capture, cfg.Client.CapturePlaintext = *capture, *capturePlain
	}
	c, err := runner.NewClient(cfg.Client, logger)
	if err != nil {
		return err
	}
	if err := c.Listen(); err != nil {
		return err
	}
	reload := func() { logger.Warn("SIGHUP: a client run from a link has no config file to reload") }
	if load != nil {
		reload = func() { _, _ = c.Reload(warnFile(load, *file, logger)) }
	}
	return runService(ctx, c.Run, reload, logger)
}

func runDemo(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	lf := addLogFlags(fs)
	once := fs.Bool("once", false, "run the self-test and exit")
	streams := fs.Int("streams", 8, "concurrent streams in the self-test")
	size := fs.Int("bytes", 1<<20, "bytes echoed per stream")
	if err := parseFlags(fs, demoHelp, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	logger, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	if !*once && !*lf.verbose && *lf.level == "info" {
		// The demo prints its own summary; only problems are logged
		// unless a level was asked for.
		logger.SetLevel(logrus.WarnLevel)
	}
	if *streams < 1 || *size < 1 {
		return errors.New("demo: --streams and --bytes must be positive")
	}
	return runner.Demo(ctx, logger, runner.DemoOptions{Streams: *streams, Bytes: *size, Once: *once, Out: stdout})
}

// clientFromLink is the config of a client run from a share link.
func clientFromLink(link, listen string) (*runner.Config, error) {
	c, _, err := runner.ParseLink(link)
	if err != nil {
		return nil, err
	}
	if listen == "" {
		listen = "127.0.0.1:1080"
	}
	if err := setListen(c, listen); err != nil {
		return nil, err
	}
	return &runner.Config{Client: c}, nil
}

// setListen applies --listen ADDR:PORT.
func setListen(c *runner.ClientConfig, listen string) error {
	host, port, err := net.SplitHostPort(listen)
	if err == nil {
		c.Port, err = strconv.Atoi(port)
	}
	if err != nil || c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("--listen %q: want ADDR:PORT, such as 127.0.0.1:1080", listen)
	}
	c.Address = host
	if host == "" {
		c.Address = "127.0.0.1"
	}
	return nil
}

// warnFile is load that also logs the warnings `usocks check` gives about
// the file (a key anyone can read, …), as at start.
func warnFile(load runner.ConfigLoader, file string, logger *logrus.Logger) runner.ConfigLoader {
	return func() (*runner.Config, error) {
		c, err := load()
		if err == nil {
			for _, w := range runner.FileWarnings(file, c) {
				logger.Warn(w)
			}
		}
		return c, err
	}
}

// runService runs a bound client or server as a service: it tells systemd
// (Type=notify) that it is ready and when it stops, and SIGHUP reloads the
// config (reload logs what it did, or why it refused).
func runService(ctx context.Context, run func(context.Context) error, reload func(), logger *logrus.Logger) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reloaded := make(chan struct{})
	defer func() { signal.Stop(hup); close(hup); <-reloaded }()
	go func() {
		defer close(reloaded)
		for range hup {
			// systemd waits for RELOADING=1 … READY=1 around a reload.
			_, _ = daemon.SdNotify(false, daemon.SdNotifyReloading)
			reload()
			_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
		}
	}()
	// A no-op outside systemd (no NOTIFY_SOCKET).
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		logger.WithError(err).Warn("sd_notify failed")
	}
	defer func() { _, _ = daemon.SdNotify(false, daemon.SdNotifyStopping) }()
	return run(ctx)
}
