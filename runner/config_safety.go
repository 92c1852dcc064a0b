package runner

import (
	"fmt"
	"os"
)

// SampleKey is the key of testdata/config/sample.yaml. It is published
// with the source, so anyone could decrypt or impersonate a tunnel that
// uses it: every side refuses it (the demo makes a fresh key).
const SampleKey = "Zjnt0au49mz8xIxlPxKccD6cefxCdwD45sadOvd+76k="

const sampleKeyRefused = "this is the sample key published with usocks: anyone can use it to read or join your tunnel. " +
	"Make your own with `usocks genkey` and put it in key: of both sides"

// FileWarnings returns warnings about the config file itself: a file
// that holds a key (or passwords) and that every user of the machine can
// read.
func FileWarnings(path string, c *Config) []string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o004 == 0 || !c.holdsSecrets() {
		return nil
	}
	return []string{fmt.Sprintf("%s is readable by every user of this machine and holds a key: chmod 600 %s (mode now %04o)",
		path, path, fi.Mode().Perm())}
}

// holdsSecrets says whether the config has a key or a password.
func (c *Config) holdsSecrets() bool {
	if c.Client != nil && (c.Client.Key != "" || c.Client.ServerKey != "") {
		return true
	}
	return c.Server != nil && (c.Server.Key != "" || len(c.Server.Clients) > 0 || len(c.Server.Frontend.Users) > 0)
}
