package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"usocks/runner"
)

const checkHelp = `usage: usocks check -c FILE

Checks every section of FILE as start-up would (keys, value types and
ranges, key and certificate files, access rules) without starting
anything, and prints every problem with its YAML path. Exit status 0 when
FILE is usable, 1 otherwise.
`

func runCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "config file")
	if err := parseFlags(fs, checkHelp, args); err != nil {
		return err
	}
	if fs.NArg() == 1 && *file == "" {
		*file = fs.Arg(0) // usocks check FILE
	} else if err := noArgs(fs); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("check: -c FILE is required")
	}
	r, err := runner.CheckConfig(*file)
	if err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", *file, w)
	}
	if len(r.Problems) > 0 {
		for _, p := range r.Problems {
			fmt.Fprintf(stderr, "%s: %s\n", *file, p)
		}
		n := "1 problem"
		if len(r.Problems) > 1 {
			n = fmt.Sprintf("%d problems", len(r.Problems))
		}
		return fmt.Errorf("%s: %s", *file, n)
	}
	fmt.Fprintf(stdout, "%s: ok\n", *file)
	for _, s := range r.Sections {
		fmt.Fprintf(stdout, "  %s\n", s)
	}
	return nil
}

const versionHelp = `usage: usocks version   (or usocks --version)

Prints the build version and the protocol versions this binary speaks.
`

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := parseFlags(fs, versionHelp, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	fmt.Fprint(stdout, versionText())
	return nil
}

// versionText is the build's module version (a tag, or "(devel)" for a
// source build) with its VCS revision when the build recorded one.
func versionText() string {
	v, extra := "(devel)", []string{}
	if info, ok := debug.ReadBuildInfo(); ok {
		if info.Main.Version != "" {
			v = info.Main.Version
		}
		set := map[string]string{}
		for _, s := range info.Settings {
			set[s.Key] = s.Value
		}
		if r := set["vcs.revision"]; r != "" {
			if len(r) > 12 {
				r = r[:12]
			}
			if set["vcs.modified"] == "true" {
				r += "+dirty"
			}
			extra = append(extra, "commit "+r)
		}
		if t := set["vcs.time"]; t != "" {
			extra = append(extra, t)
		}
	}
	line := "usocks " + v
	if len(extra) > 0 {
		line += " (" + strings.Join(extra, ", ") + ")"
	}
	return fmt.Sprintf("%s\nprotocols: v2 (default), v1 (legacy)\n%s %s/%s\n", line, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
