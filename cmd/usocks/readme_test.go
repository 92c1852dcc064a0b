package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadmeFirstSteps runs the README's walk-through ("Using it", from
// the sample config made with a fresh key to the client run from a share
// link) as a new user types it, command by command, in a directory of its
// own. What differs from typing it: the binary is the one the tests built
// (for `go build`), the fixed ports are free ones (the same ones in the
// sample config), the link is the one `usocks link` printed (for the
// README's 'usocks://…'), and curl first waits for the ports it needs, as
// a person typing would. Both curls must get the target's page through
// the tunnel.
func TestReadmeFirstSteps(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("the README's walk-through runs python3 (.ci/run installs it)")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("the README's walk-through runs curl (.ci/run installs it)")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	steps := walkThrough(t, string(readme))
	sample, err := os.ReadFile("../../testdata/config/sample.yaml")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(dir, "usocks")); err != nil {
		t.Fatal(err)
	}
	ports := map[string]string{}
	for _, p := range []string{"4194", "1080", "1081", "8080"} {
		ports[p] = fmt.Sprint(freePort(t))
	}
	renumber := func(s string) string {
		return regexp.MustCompile(`\b(4194|1080|1081|8080)\b`).ReplaceAllStringFunc(s, func(p string) string { return ports[p] })
	}
	if err := os.MkdirAll(filepath.Join(dir, "testdata", "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "testdata", "config", "sample.yaml"), []byte(renumber(string(sample))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("the target's page\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	steps = strings.ReplaceAll(steps, "go build -o usocks ./cmd/usocks", "test -x ./usocks")
	steps = strings.ReplaceAll(steps, "'usocks://…'", `"$(./usocks link -c config.yaml)"`)
	script := fmt.Sprintf(`set -e
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
wait_port() {
  for _ in $(seq 400); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listening on $1" >&2; return 1
}
curl() {
  wait_port %s
  for a; do case $a in http://127.0.0.1:*) p=${a#http://127.0.0.1:}; wait_port ${p%%%%/*};; esac; done
  command curl -sS --max-time 20 "$@"
}
%s
`, ports["8080"], renumber(steps))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's walk-through failed: %v\n--- script\n%s\n--- output\n%s", err, script, out)
	}
	if n := strings.Count(string(out), "the target's page"); n != 2 {
		t.Fatalf("the target's page came back %d times, want 2 (the config's client, the link's client)\n--- output\n%s", n, out)
	}
	if !strings.Contains(string(out), "config.yaml: ok") || !strings.Contains(string(out), "usocks://") {
		t.Fatalf("check or link printed nothing expected\n--- output\n%s", out)
	}
}

// walkThrough is the shell of the README's "Using it" section from the
// command that makes config.yaml to the section's end: its indented code
// blocks, in order.
func walkThrough(t *testing.T, readme string) string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "\n## Using it\n")
	if !ok {
		t.Fatal(`README.md has no "## Using it" section`)
	}
	section, _, _ := strings.Cut(rest, "\n### ")
	var b strings.Builder
	started := false
	for _, line := range strings.Split(section, "\n") {
		if strings.Contains(line, "umask 077") {
			started = true
		}
		if started && strings.HasPrefix(line, "    ") {
			b.WriteString(strings.TrimPrefix(line, "    ") + "\n")
		}
	}
	if !started {
		t.Fatal(`README.md "Using it" makes no config.yaml (umask 077; sed …)`)
	}
	return b.String()
}
