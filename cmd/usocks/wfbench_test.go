package main

import (
	"strings"
	"testing"
)

func TestWFBenchCommandLine(t *testing.T) {
	for _, c := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"help", "wfbench"}, 0, "usage: usocks wfbench", ""},
		{[]string{"help"}, 0, "usocks wfbench", ""},
		{[]string{"wfbench", "-links", "fast"}, 1, "", "-links: link \"fast\""},
		{[]string{"wfbench", "-policies", "nope"}, 1, "", "unknown policy \"nope\""},
		{[]string{"wfbench", "-pages", "1"}, 1, "", "at least 2 pages"},
		{[]string{"wfbench", "extra"}, 1, "", "unexpected argument \"extra\""},
	} {
		out, errOut, code := usocks(t, c.args...)
		if code != c.code || !strings.Contains(out, c.stdout) || !strings.Contains(errOut, c.stderr) {
			t.Errorf("%v: exit %d\nstdout: %s\nstderr: %s", c.args, code, out, errOut)
		}
	}
}
