package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/mdp/qrterminal/v3"

	"usocks/runner"
)

const linkHelp = `usage: usocks link -c FILE [flags]

Prints a usocks:// share link with everything a client needs (server,
port, protocol, cipher, backend and its options, key, defence policy),
and with --qr also a QR code to scan. Anyone with the link can use the
tunnel: hand it over as you would the key. A client runs from it with
usocks client --link LINK. Format: docs/share-link.md.

From a client: section the link is that client's settings. From a
server: section (--from server, the default when the file has no client:
section) it is what a client of this server needs: give --host when the
server listens on all addresses, and --user NAME on a multi-user server.
`

func runLink(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("link", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "config file")
	from := fs.String("from", "", "the section to link from: client or server (default: client if the file has one)")
	host := fs.String("host", "", "server section: the name or address clients reach the server at")
	user := fs.String("user", "", "server section of a multi-user server: the client (a name in server.clients)")
	name := fs.String("name", "", "a label for the link (after '#'; default the user name)")
	qr := fs.Bool("qr", false, "also print the link as a QR code")
	if err := parseFlags(fs, linkHelp, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("link: -c FILE is required")
	}
	cfg, err := runner.LoadConfig(*file)
	if err != nil {
		return err
	}
	if *from == "" {
		*from = "server"
		if cfg.Client != nil && *host == "" && *user == "" {
			*from = "client"
		}
	}
	var link string
	switch *from {
	case "client":
		if cfg.Client == nil {
			return fmt.Errorf("%s: no client: section", *file)
		}
		if err := cfg.Client.Validate(); err != nil {
			return err
		}
		if *host != "" || *user != "" {
			return fmt.Errorf("link: --host and --user are for --from server")
		}
		if cfg.Client.Backend.TLSCA != "" {
			fmt.Fprintln(stderr, "usocks: warning: the link does not carry client.backend.tls_ca: its client must trust the server's certificate by itself; "+
				"set client.backend.tls_pin instead (the server logs it as tls_pin= at start), or make the link from the server section, which pins a certificate that public roots do not vouch for")
		}
		link, err = runner.Link(cfg.Client, *name)
	case "server":
		if cfg.Server == nil {
			return fmt.Errorf("%s: no server: section", *file)
		}
		if err := cfg.Server.Validate(); err != nil {
			return err
		}
		link, err = runner.ServerLink(cfg.Server, *host, *user, *name)
	default:
		return fmt.Errorf("link: --from %q: want client or server", *from)
	}
	if err != nil {
		return fmt.Errorf("link: %w", err)
	}
	fmt.Fprintln(stdout, link)
	if *qr {
		qrterminal.GenerateWithConfig(link, qrterminal.Config{Level: qrterminal.L, Writer: stdout,
			HalfBlocks: true, BlackChar: qrterminal.BLACK_BLACK, WhiteChar: qrterminal.WHITE_WHITE,
			BlackWhiteChar: qrterminal.BLACK_WHITE, WhiteBlackChar: qrterminal.WHITE_BLACK, QuietZone: 2})
	}
	return nil
}
