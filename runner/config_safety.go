package runner

import (
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"usocks/wire"
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

// warnDamagedKey warns when a key that was taken as a passphrase looks
// like a base64 key with a typo: it would silently be a different key.
func warnDamagedKey(log *logrus.Entry, key, value string) {
	if wire.LooksLikeDamagedKey(value) {
		log.WithField("key", key).Warn("the key looks like base64 with a typo but is taken as a passphrase; check it against `usocks genkey` output (a passphrase needs no base64 look)")
	}
}
