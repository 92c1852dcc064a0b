package stages

import (
	"context"
	"crypto/mlkem"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"usocks/wire"
)

// TestHybridHandshake: a post-quantum client and a server agree on keys
// that pair up, and both log the same hybrid keys.
func TestHybridHandshake(t *testing.T) {
	var psk wire.PSK
	_, _ = rand.Read(psk[:])
	cc, sc := tcpPair(t)
	srv := testServerHandshake(&psk)
	var srvKeys, cliKeys wire.SessionKeys
	srv.KeyLog = func(_ net.Conn, k *wire.SessionKeys, _ wire.CipherID) { srvKeys = *k }
	done := make(chan error, 1)
	var sk *Keys
	go func() {
		var err error
		sk, err = srv.Accept(context.Background(), sc, time.Now())
		done <- err
	}()
	cli := &ClientHandshake{PSK: &psk, Cipher: wire.CipherAES256GCM, Rand: rand.Reader, Now: time.Now, PostQuantum: true,
		KeyLog: func(_ net.Conn, k *wire.SessionKeys, _ wire.CipherID) { cliKeys = *k }}
	ck, err := cli.Run(context.Background(), cc)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if cliKeys != srvKeys {
		t.Fatal("client and server derived different hybrid keys")
	}
	rec, _ := ck.Seal.SealFrame(nil, &wire.Frame{Type: wire.FramePing, Payload: []byte("pq")}, 0)
	if _, _, err := sk.Open.Open(nil, rec); err != nil {
		t.Fatalf("server cannot open the client's record: %v", err)
	}
}

// fakeServer reads a client flight and answers with a valid reply that
// carries an ML-KEM ciphertext only if withKEM (a server that ignores the
// offer: a downgrade, possible only with the PSK).
func fakeServer(t *testing.T, psk *wire.PSK, c net.Conn, withKEM bool) {
	r := wire.NewClientHelloReader(psk)
	prefix := make([]byte, wire.ClientPrefixLen)
	if _, err := io.ReadFull(c, prefix); err != nil {
		t.Error(err)
		return
	}
	rest, err := r.OpenPrefix(prefix)
	if err != nil {
		t.Error(err)
		return
	}
	body := make([]byte, rest)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Error(err)
		return
	}
	ch, err := r.OpenRest(body)
	if err != nil {
		t.Error(err)
		return
	}
	eph, _ := wire.NewEphemeral(rand.Reader)
	sh := wire.ServerHello{Time: uint64(time.Now().Unix()), ClientSalt: ch.Salt, Public: eph.Public()}
	if withKEM {
		ct := make([]byte, wire.KEMCiphertextSize) // to a client that offered no key
		if ek, ok := ch.Ext.Get(wire.ExtKEM); ok {
			k, err := mlkem.NewEncapsulationKey768(ek)
			if err != nil {
				t.Error(err)
				return
			}
			_, ct = k.Encapsulate()
		}
		sh.Ext = wire.Extensions{{Type: wire.ExtKEM, Value: ct}}
	}
	_, _ = c.Write(wire.AppendServerHello(nil, psk, &sh))
}

// TestHybridNeverSilentlyDropped: a post-quantum client refuses a reply
// without the ML-KEM ciphertext, and a classic client refuses one with a
// ciphertext it never asked for.
func TestHybridNeverSilentlyDropped(t *testing.T) {
	var psk wire.PSK
	_, _ = rand.Read(psk[:])
	for _, tc := range []struct {
		name        string
		pq, withKEM bool
		ok          bool
	}{{"pq answered", true, true, true}, {"pq ignored", true, false, false}, {"classic answered with kem", false, true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			cc, sc := tcpPair(t)
			served := make(chan struct{})
			go func() { defer close(served); fakeServer(t, &psk, sc, tc.withKEM) }()
			defer func() { <-served }()
			cli := &ClientHandshake{PSK: &psk, Cipher: wire.CipherChaCha20Poly1305, Rand: rand.Reader, Now: time.Now, PostQuantum: tc.pq, Timeout: 5 * time.Second}
			_, err := cli.Run(context.Background(), cc)
			if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrServerAuth)) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestHybridFlightSizes: with the ML-KEM key the client's first flight is
// 1295 + U[0, 1300) bytes (a classic one 108 + U[0, 1300)): the padding
// range is as wide as before, only shifted by the key.
func TestHybridFlightSizes(t *testing.T) {
	var psk wire.PSK
	_, _ = rand.Read(psk[:])
	const n = 300
	lo, hi := 1<<30, 0
	for range n {
		a, b := net.Pipe()
		got := make(chan int, 1)
		go func() {
			buf := make([]byte, 8192)
			k, _ := b.Read(buf)
			got <- k
			b.Close()
		}()
		cli := &ClientHandshake{PSK: &psk, Cipher: wire.CipherChaCha20Poly1305, Rand: rand.Reader, Now: time.Now, PostQuantum: true, Timeout: time.Second}
		_, _ = cli.Run(context.Background(), a)
		a.Close()
		k := <-got
		lo, hi = min(lo, k), max(hi, k)
	}
	base := wire.ClientPrefixLen + 33 + 3 + wire.KEMEncapsulationKeySize + wire.TagSize
	t.Logf("%d hybrid client flights: %d..%d bytes (base %d)", n, lo, hi, base)
	if lo < base || hi >= base+clientPadMax {
		t.Fatalf("flight sizes %d..%d outside [%d, %d)", lo, hi, base, base+clientPadMax)
	}
	if hi-lo < clientPadMax*3/4 {
		t.Fatalf("flight sizes %d..%d: the distribution narrowed", lo, hi)
	}
}
