package frontend

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"usocks/stages"
)

// panicReader stands for a parser bug: reading the app's request panics.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("injected panic reading the request") }

// panicConn is an app connection whose Read panics.
type panicConn struct{ net.Conn }

func (panicConn) Read([]byte) (int, error) { panic("injected panic reading the request") }

// TestProxyFrontendPanicFailsOneStream: a panic while a proxy frontend
// reads a stream's request (on the goroutine readRequest starts) comes back
// from Open as a *stages.PanicError with the panic's stack; the process
// goes on, and the stage resets that one stream.
func TestProxyFrontendPanicFailsOneStream(t *testing.T) {
	for name, fe := range map[string]stages.Frontend{
		"socks5": &Socks5{Dialer: NewDialer(nil, time.Second, 0)},
		"http":   &HTTPProxy{Dialer: NewDialer(nil, time.Second, 0)},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := fe.Open(context.Background(), &pxStream{r: panicReader{}})
			var pe *stages.PanicError
			if !errors.As(err, &pe) {
				if c != nil {
					c.Close()
				}
				t.Fatalf("Open: %v, want a *stages.PanicError", err)
			}
			if !strings.Contains(string(pe.Stack), "panicReader") {
				t.Errorf("stack does not show the panic:\n%s", pe.Stack)
			}
		})
	}
}

// TestLocalProxyPanicFailsOneConnection: the client-side proxy exchange
// recovers a panic, logs it with its stack and fails that connection.
func TestLocalProxyPanicFailsOneConnection(t *testing.T) {
	for _, typ := range []string{LocalSocks5, LocalHTTP, LocalMixed} {
		t.Run(typ, func(t *testing.T) {
			logger, hook := test.NewNullLogger()
			app, cli := net.Pipe()
			defer app.Close()
			defer cli.Close()
			p := &LocalProxy{Type: typ, Log: logrus.NewEntry(logger)}
			tc, err := p.Accept(panicConn{cli})
			var pe *stages.PanicError
			if tc != nil || !errors.As(err, &pe) {
				t.Fatalf("Accept: %v, %v; want a *stages.PanicError", tc, err)
			}
			e := hook.LastEntry()
			if e == nil || e.Level != logrus.ErrorLevel || !strings.Contains(e.Data["stack"].(string), "panicConn") {
				t.Errorf("log %+v, want an error with the panic's stack", e)
			}
		})
	}
}
