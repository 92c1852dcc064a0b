package stages

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"usocks/wire"
)

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func testServerHandshake(psk *wire.PSK) *ServerHandshake {
	return &ServerHandshake{PSK: psk, Rand: rand.Reader, Now: time.Now,
		Salts: NewLocalSaltStore(DefaultSkew, 1000, 0, time.Now().Add(-time.Minute)), DrainTimeout: 300 * time.Millisecond}
}

func TestHandshakeRoundTrip(t *testing.T) {
	var psk wire.PSK
	_, _ = rand.Read(psk[:])
	for _, c := range []wire.CipherID{wire.CipherChaCha20Poly1305, wire.CipherAES256GCM} {
		cc, sc := tcpPair(t)
		srv := testServerHandshake(&psk)
		type res struct {
			k   *Keys
			err error
		}
		ch := make(chan res, 1)
		go func() {
			k, err := srv.Accept(context.Background(), sc, time.Now())
			ch <- res{k, err}
		}()
		cli := &ClientHandshake{PSK: &psk, Cipher: c, Rand: rand.Reader, Now: time.Now}
		ck, err := cli.Run(context.Background(), cc)
		if err != nil {
			t.Fatal(err)
		}
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		if ck.Cipher != c || r.k.Cipher != c {
			t.Fatalf("cipher %v/%v, want %v", ck.Cipher, r.k.Cipher, c)
		}
		// The keys pair up: client seal opens on the server, and back.
		rec, _ := ck.Seal.SealFrame(nil, &wire.Frame{Type: wire.FramePing, Payload: []byte("hi")}, 3)
		body, n, err := r.k.Open.Open(nil, rec)
		if err != nil || n != len(rec) {
			t.Fatalf("server cannot open client record: %v", err)
		}
		if f, _, _ := wire.ParseFrame(body); string(f.Payload) != "hi" {
			t.Fatalf("got %v", f)
		}
		rec, _ = r.k.Seal.SealFrame(nil, &wire.Frame{Type: wire.FramePong}, 0)
		if _, _, err := ck.Open.Open(nil, rec); err != nil {
			t.Fatalf("client cannot open server record: %v", err)
		}
	}
}

// TestEveryInvalidHandshakeIsRejectedTheSameWay: each way a first flight can
// be wrong ends in ErrRejected via Reject: nothing is written back and the
// connection is closed with FIN after the fixed drain time.
func TestEveryInvalidHandshakeIsRejectedTheSameWay(t *testing.T) {
	var psk, other wire.PSK
	_, _ = rand.Read(psk[:])
	_, _ = rand.Read(other[:])
	flight := func(k *wire.PSK, ts time.Time, c wire.CipherID) []byte {
		h := wire.ClientHello{Time: uint64(ts.Unix()), Cipher: c}
		_, _ = rand.Read(h.Salt[:])
		e, _ := wire.NewEphemeral(rand.Reader)
		h.Public = e.Public()
		return wire.AppendClientHello(nil, k, &h)
	}
	good := flight(&psk, time.Now(), wire.CipherAES256GCM)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-1] ^= 1
	cases := map[string]func() []byte{
		"short":           func() []byte { return good[:40] },
		"wrong key":       func() []byte { return flight(&other, time.Now(), wire.CipherAES256GCM) },
		"skew +31s":       func() []byte { return flight(&psk, time.Now().Add(32*time.Second), wire.CipherAES256GCM) },
		"skew -31s":       func() []byte { return flight(&psk, time.Now().Add(-32*time.Second), wire.CipherAES256GCM) },
		"before start":    func() []byte { return flight(&psk, time.Now().Add(-2*time.Minute), wire.CipherAES256GCM) },
		"unknown cipher":  func() []byte { return flight(&psk, time.Now(), 9) },
		"tampered var":    func() []byte { return flipped },
		"random":          func() []byte { return make([]byte, 300) },
		"empty":           func() []byte { return nil },
		"replayed (good)": func() []byte { return good },
	}
	srv := testServerHandshake(&psk)
	srv.Skew = 30 * time.Second
	// Use the good flight once so that its replay is refused.
	{
		cc, sc := tcpPair(t)
		go func() { _, _ = cc.Write(good) }()
		if _, err := srv.Accept(context.Background(), sc, time.Now()); err != nil {
			t.Fatalf("good flight refused: %v", err)
		}
	}
	var wg sync.WaitGroup
	for name, mk := range cases {
		cc, sc := tcpPair(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b := mk(); len(b) > 0 {
				if _, err := cc.Write(b); err != nil {
					t.Error(err)
					return
				}
			}
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				_, err := srv.Accept(context.Background(), sc, start)
				done <- err
			}()
			_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.Copy(io.Discard, cc)
			el := time.Since(start)
			_ = cc.Close()
			if aerr := <-done; !errors.Is(aerr, ErrRejected) {
				t.Errorf("%s: Accept = %v, want ErrRejected", name, aerr)
			}
			if n != 0 || err != nil {
				t.Errorf("%s: got %d bytes back, err %v; want nothing and a clean FIN", name, n, err)
			}
			if el < 250*time.Millisecond {
				t.Errorf("%s: closed after %v, before the fixed drain time", name, el)
			}
		}()
	}
	wg.Wait()
}
