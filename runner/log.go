package runner

import (
	"io"
	"os"

	"github.com/sirupsen/logrus"
)

// NewLogger builds the process logger: text by default, JSON on request.
// Components take *logrus.Entry values derived from it, never a global.
func NewLogger(level string, json bool, out io.Writer) (*logrus.Logger, error) {
	l := logrus.New()
	if out == nil {
		out = os.Stderr
	}
	l.SetOutput(out)
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	l.SetLevel(lv)
	if json {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	return l, nil
}
