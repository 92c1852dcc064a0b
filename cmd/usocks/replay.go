package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"usocks/runner/capture"
)

const replayUsage = `usage: usocks replay FILE [flags]

Lists a capture file (made with --capture / capture: PATH) record by record,
feeding its ciphertext through the same record decoder the tunnel uses.
v2: --key (the PSK) verifies the handshakes; records are forward-secret and
are decoded only from a capture made with --capture-plaintext (it holds the
session keys). v1: --key (the config key) decodes every record.
FILE "-" reads standard input.

flags:
`

// runReplay is the `usocks replay` subcommand.
func runReplay(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, replayUsage); fs.PrintDefaults() }
	key := fs.String("key", "", "the key from the config (v2: verifies handshakes; v1: decodes records); default $USOCKS_KEY")
	stream := fs.Int("stream", -1, "show only records and frames of this stream id")
	dir := fs.String("dir", "", "show only one direction: in or out (seen from the capturing side)")
	jsonOut := fs.Bool("json", false, "print one JSON object per line")
	noTime := fs.Bool("no-time", false, "leave out time offsets")
	name, in, closeFile, err := captureFile(fs, args)
	if err != nil {
		return err
	}
	defer closeFile()
	o := capture.ReplayOptions{Key: *key, Stream: *stream, JSON: *jsonOut, NoTime: *noTime}
	if o.Key == "" {
		o.Key = os.Getenv("USOCKS_KEY")
	}
	if *dir != "" {
		d, err := capture.ParseDir(*dir)
		if err != nil || d == capture.DirNone {
			return fmt.Errorf("replay: --dir %q: want in or out", *dir)
		}
		o.Dir = d
	}
	if *stream < -1 || *stream > 65535 {
		return fmt.Errorf("replay: --stream %d: want a stream id 0..65535", *stream)
	}
	st, err := capture.Replay(in, stdout, o)
	if err != nil {
		return fmt.Errorf("replay %s: %w", name, err)
	}
	if st.Errors > 0 {
		// The listing shows each error where it occurred; the exit status
		// lets scripts notice.
		return fmt.Errorf("replay %s: %d errors (see the listing)", name, st.Errors)
	}
	return nil
}
