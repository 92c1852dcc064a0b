package runner

import (
	"errors"

	"github.com/sirupsen/logrus"

	"usocks/stages"
)

// authFailLimit is how many handshakes in a row may go without a valid
// reply before the client says, once, that its key is probably wrong.
const authFailLimit = 3

// failed reports a session that ended while the client runs, asks the
// policy how long to wait, and returns its answer. Called by Run only.
//
// A wrong key cannot be told apart from a dead or foreign server: a v2
// server that cannot authenticate a client's first flight stays silent and
// closes at its probe deadline, exactly as it does for a prober, so the
// client sees "no reply" (or a close) — as it would from a server that
// hangs, or from a port that is not usocks. Retrying may fix the latter,
// so the client keeps trying under the policy, and after authFailLimit
// such handshakes in a row it logs one error naming its key's
// fingerprint, to compare with the server's "server started" line.
func (c *Client) failed(err error) Delay {
	d := c.Backoff.Next()
	entry := c.log.WithFields(logrus.Fields{
		"retry_in": d.Wait.Round(1e6).String(),
		"failures": float64(int(d.Failures*10)) / 10,
	})
	switch {
	case err == nil:
		entry.Info("session closed by server, reconnecting")
	default:
		entry.WithError(err).Warn("session ended, reconnecting")
	}
	if errors.Is(err, stages.ErrServerAuth) {
		c.authFails++
		if c.authFails == authFailLimit {
			f := logrus.Fields{"attempts": authFailLimit}
			if psk := c.live.Load().psk; psk != nil {
				f["key"] = KeyFingerprint(psk)
			}
			c.log.WithFields(f).WithError(err).Error("no valid reply from the server to several handshakes in a row: " +
				"check that client.key is the server's key (compare the key fingerprint with the server's \"server started\" line) and that the address is a usocks v2 server; " +
				"a wrong key looks the same as a server that does not answer, so the client keeps trying")
		}
	} else {
		c.authFails = 0
	}
	if d.FirstLong {
		c.log.WithFields(logrus.Fields{
			"failures":   float64(int(d.Failures*10)) / 10,
			"threshold":  c.Backoff.Threshold,
			"decay":      c.Backoff.Decay.String(),
			"backoff":    d.Wait.Round(1e6).String(),
			"last_error": errString(err),
		}).Error("sessions keep failing: backing off long (logged once until sessions stay up)")
	}
	return d
}

func errString(err error) string {
	if err == nil {
		return "closed by server"
	}
	return err.Error()
}
