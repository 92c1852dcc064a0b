// Command usocks is the usocks tunnel: client, server, key generation,
// config check, capture replay and a self-contained demo. It only parses
// flags; the runner package does the work.
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

	"usocks/wire"
)

const usage = `usocks: an encrypted TCP tunnel with a pre-shared key

usage:
  usocks genkey                      print a new random key
  usocks server -c FILE [flags]      run the server section of FILE
  usocks client -c FILE [flags]      run the client section of FILE
  usocks client --link LINK          run a client from a share link
  usocks check -c FILE               check FILE without starting anything
  usocks link -c FILE [--qr]         print a share link (and QR code) for a client
  usocks demo [--once]               client, server and echo target on loopback
  usocks bench [flags]               compare throughput and latency on loopback
  usocks wfbench [flags]             website-fingerprinting bench
  usocks replay FILE [flags]         list a capture file
  usocks analyze FILE [flags]        what an observer sees in a capture file
  usocks version                     print the version and protocol versions
  usocks help COMMAND                the flags of one command

Config reference: README.md; sample: testdata/config/sample.yaml.
`

// commands maps each subcommand to its function. Every function parses
// its own flags; given -h it prints its help and returns flag.ErrHelp.
var commands map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error

func init() {
	commands = map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"genkey":  runGenkey,
		"server":  func(ctx context.Context, a []string, o, e io.Writer) error { return serve(ctx, "server", a, o, e) },
		"client":  func(ctx context.Context, a []string, o, e io.Writer) error { return serve(ctx, "client", a, o, e) },
		"demo":    func(ctx context.Context, a []string, o, e io.Writer) error { return serve(ctx, "demo", a, o, e) },
		"check":   runCheck,
		"bench":   runBench,
		"wfbench": runWFBench,
		"replay":  func(_ context.Context, a []string, o, e io.Writer) error { return runReplay(a, o, e) },
		"version": runVersion,
		"analyze": runAnalyze,
		"link":    runLink,
	}
}

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
	// The first signal stops gracefully (a server drains its streams); a
	// second one ends the process at once.
	context.AfterFunc(ctx, stop)
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(rest) == 0 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		name, rest = rest[0], []string{"-h"}
		if _, ok := commands[name]; ok {
			stderr = stdout // asked for, help goes to standard output
		}
	case "--version", "-version":
		name = "version"
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "usocks: unknown command %q\n\n%s", name, usage)
		return 2
	}
	if err := cmd(ctx, rest, stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "usocks: %v\n", err)
		return 1
	}
	return 0
}

// parseFlags parses a subcommand's flags. Given -h it prints help (the
// text, then the flags, if any) to the flag set's output and returns
// flag.ErrHelp; a bad flag is one line that says where to look.
func parseFlags(fs *flag.FlagSet, help string, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(out, help)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(out, "\nflags:")
			fs.PrintDefaults()
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("%s: %w (see usocks help %s)", fs.Name(), err, fs.Name())
	}
	return nil
}

// noArgs refuses positional arguments left after the flags.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (see usocks help %s)", fs.Name(), fs.Arg(0), fs.Name())
	}
	return nil
}

const genkeyHelp = `usage: usocks genkey

Prints a new random key (32 bytes, base64) for the key: of a config.
`

func runGenkey(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := parseFlags(fs, genkeyHelp, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	k, err := wire.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, k)
	return nil
}
