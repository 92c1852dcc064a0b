package main

import (
	"context"
	"errors"
	"io"
)

// runBench is the `usocks bench` subcommand (see runner/bench).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("bench: not built yet")
}
