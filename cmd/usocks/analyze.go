package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"usocks/runner/capture"
)

const analyzeUsage = `usage: usocks analyze FILE [flags]

Prints what an on-path observer of the captured sessions sees, from a
capture file alone (no key needed): per direction the wire and payload
bytes and the overhead, packet sizes (each write cut into TCP segments of
at most --mss bytes), record sizes and PAD (dummy) records, burst sizes
(a burst ends when the other side sends or after --gap idle) and packet
inter-arrival times. FILE "-" reads standard input.

flags:
`

// runAnalyze is the `usocks analyze` subcommand.
func runAnalyze(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), analyzeUsage); fs.PrintDefaults() }
	mss := fs.Int("mss", capture.DefaultMSS, "largest TCP payload per packet (1448: a 1500-byte MTU with TCP timestamps)")
	gap := fs.Duration("gap", capture.DefaultBurstGap, "idle time that ends a burst")
	jsonOut := fs.Bool("json", false, "print the analysis as JSON")
	name, in, closeFile, err := captureFile(fs, args)
	if err != nil {
		return err
	}
	defer closeFile()
	if *mss < 1 || *gap <= 0 {
		return fmt.Errorf("analyze: --mss %d, --gap %s: want both above 0", *mss, *gap)
	}
	a, err := capture.Analyze(in, *mss, *gap)
	if err != nil {
		return fmt.Errorf("analyze %s: %w", name, err)
	}
	if *jsonOut {
		return a.WriteJSON(stdout)
	}
	return a.WriteText(stdout)
}

// captureFile parses fs's flags, which may come before or after the one
// FILE argument, and opens FILE ("-": standard input). The caller calls
// closeFile when done.
func captureFile(fs *flag.FlagSet, args []string) (name string, in io.Reader, closeFile func(), err error) {
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", nil, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(files) != 1 {
		fs.Usage()
		return "", nil, nil, fmt.Errorf("%s: want exactly one FILE", fs.Name())
	}
	if files[0] == "-" {
		return "-", os.Stdin, func() {}, nil
	}
	f, err := os.Open(files[0])
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s: %w", fs.Name(), err)
	}
	return files[0], f, func() { _ = f.Close() }, nil
}
