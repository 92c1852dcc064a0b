package runner

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"

	"usocks/stages"
)

// captureHello runs the client's real backend dial against a loopback
// listener and returns the first TLS record it sends (the ClientHello).
func captureHello(t *testing.T, b BackendConfig) []byte {
	t.Helper()
	ln := listenLocal(t)
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		got <- readRecord(c)
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	b.Server, b.TLSServerName = "127.0.0.1", "usocks.test"
	b.Port, _ = strconv.Atoi(port)
	logger, _ := testLogger(t)
	cli, err := NewClient(&ClientConfig{Common: Common{Key: newKey(t), Backend: b}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c, err := cli.dialBackend(ctx, cli.cfg().backendServers()[0]); err == nil {
			c.Close()
		}
	}()
	hello := <-got
	cancel()
	<-dialed
	if hello == nil {
		t.Fatal("no ClientHello captured")
	}
	return hello
}

// helloFields is a ClientHello taken apart: every field a fingerprint
// (JA3, JA4, a censor's rule) looks at. GREASE values, which are random
// per connection, read as "GREASE".
type helloFields struct {
	RecordVersion, LegacyVersion string
	SessionIDLen                 int
	CipherSuites                 []string
	Compression                  []byte
	Extensions                   []string // in order
	SNI                          string
	Groups, KeyShares            []string // key shares as group/length
	ALPN, ALPS                   []string
	SigAlgs, Versions            []string
	PointFormats, PSKModes       []byte
	CertCompression              []string
}

func grease(v uint16) string {
	if v&0x0f0f == 0x0a0a && v>>8 == v&0xff {
		return "GREASE"
	}
	return "0x" + strconv.FormatUint(uint64(v), 16)
}

// u16s reads a list of 16-bit values.
func u16s(b []byte) []string {
	var out []string
	for i := 0; i+1 < len(b); i += 2 {
		out = append(out, grease(binary.BigEndian.Uint16(b[i:])))
	}
	return out
}

// vec reads a vector with an n-byte length from b, returning it and the rest.
func vec(t *testing.T, b []byte, n int) ([]byte, []byte) {
	t.Helper()
	if len(b) < n {
		t.Fatalf("truncated ClientHello")
	}
	l := 0
	for _, x := range b[:n] {
		l = l<<8 | int(x)
	}
	if len(b) < n+l {
		t.Fatalf("truncated ClientHello vector")
	}
	return b[n : n+l], b[n+l:]
}

// protoList reads an ALPN-style list of 8-bit-length strings.
func protoList(t *testing.T, b []byte) []string {
	var out []string
	for len(b) > 0 {
		var p []byte
		p, b = vec(t, b, 1)
		out = append(out, string(p))
	}
	return out
}

// parseHello takes a ClientHello record apart.
func parseHello(t *testing.T, rec []byte) *helloFields {
	t.Helper()
	if len(rec) < 9 || rec[0] != 0x16 || rec[5] != 1 {
		t.Fatalf("not a ClientHello record: %x", rec[:min(len(rec), 9)])
	}
	h := &helloFields{RecordVersion: grease(binary.BigEndian.Uint16(rec[1:]))}
	body, _ := vec(t, rec[6:], 3)
	h.LegacyVersion = grease(binary.BigEndian.Uint16(body))
	b := body[2+32:]
	var sid, cs, ext []byte
	sid, b = vec(t, b, 1)
	h.SessionIDLen = len(sid)
	cs, b = vec(t, b, 2)
	h.CipherSuites = u16s(cs)
	h.Compression, b = vec(t, b, 1)
	ext, _ = vec(t, b, 2)
	for len(ext) > 0 {
		if len(ext) < 4 {
			t.Fatal("truncated extension")
		}
		typ := binary.BigEndian.Uint16(ext)
		var d []byte
		d, ext = vec(t, ext[2:], 2)
		h.Extensions = append(h.Extensions, grease(typ))
		switch typ {
		case 0: // server_name
			l, _ := vec(t, d, 2)
			name, _ := vec(t, l[1:], 2)
			h.SNI = string(name)
		case 10:
			l, _ := vec(t, d, 2)
			h.Groups = u16s(l)
		case 51:
			l, _ := vec(t, d, 2)
			for len(l) > 0 {
				g := binary.BigEndian.Uint16(l)
				var k []byte
				k, l = vec(t, l[2:], 2)
				h.KeyShares = append(h.KeyShares, grease(g)+"/"+strconv.Itoa(len(k)))
			}
		case 16:
			l, _ := vec(t, d, 2)
			h.ALPN = protoList(t, l)
		case 17513, 17613: // application_settings (old and new code point)
			l, _ := vec(t, d, 2)
			h.ALPS = protoList(t, l)
		case 13:
			l, _ := vec(t, d, 2)
			h.SigAlgs = u16s(l)
		case 43:
			l, _ := vec(t, d, 1)
			h.Versions = u16s(l)
		case 11:
			h.PointFormats, _ = vec(t, d, 1)
		case 45:
			h.PSKModes, _ = vec(t, d, 1)
		case 27:
			l, _ := vec(t, d, 1)
			h.CertCompression = u16s(l)
		}
	}
	return h
}

var updateHello = flag.Bool("update-hello", false, "rewrite testdata/clienthello/*.hex from the uTLS presets")

// referenceHello is the ClientHello the bare uTLS preset sends for SNI
// usocks.test (the reference's provenance: testdata/clienthello/README.md).
func referenceHello(t *testing.T, id utls.ClientHelloID) []byte {
	ln := listenLocal(t)
	defer ln.Close()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	uc := utls.UClient(raw, &utls.Config{ServerName: "usocks.test"}, id)
	go func() { _ = uc.Handshake() }()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rec := readRecord(c)
	if rec == nil {
		t.Fatal("no ClientHello from the reference client")
	}
	return rec
}

// readRecord reads one TLS record (nil on error or after 10s).
func readRecord(c net.Conn) []byte {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil
	}
	rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:])))
	copy(rec, hdr)
	if _, err := io.ReadFull(c, rec[5:]); err != nil {
		return nil
	}
	return rec
}

// TestBrowserClientHello: the ClientHello the tls backend sends, captured
// on loopback, matches the browser's reference field by field: record and
// legacy versions, session id, cipher suites, compression, the extension
// set (and its order, GREASE positions included; Chrome permutes the
// others per connection, as the real browser does), SNI, groups, key
// shares (Chrome: X25519MLKEM768 first), ALPN h2/http1.1, ALPS, signature
// algorithms, versions, point formats, PSK modes, certificate compression.
// With a WebSocket path (wss) the only difference is ALPN http/1.1 alone
// and no ALPS, as a browser opening a WebSocket sends.
func TestBrowserClientHello(t *testing.T) {
	for _, tc := range []struct {
		name     string
		shuffled bool
	}{{"chrome", true}, {"firefox", false}} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := stages.BrowserHello(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join("testdata", "clienthello", tc.name+".hex")
			if *updateHello {
				if err := os.WriteFile(file, []byte(hex.EncodeToString(referenceHello(t, id))+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			refHex, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			refRec, err := hex.DecodeString(strings.TrimSpace(string(refHex)))
			if err != nil {
				t.Fatal(err)
			}
			ref := parseHello(t, refRec)
			got := parseHello(t, captureHello(t, BackendConfig{Type: "tls", DetectConfig: DetectConfig{Fingerprint: tc.name}}))
			t.Logf("%s ClientHello: %+v", tc.name, *got)
			compareHello(t, got, ref, tc.shuffled)
			if tc.name == "chrome" && (len(got.KeyShares) < 2 || got.KeyShares[1] != "0x11ec/1216") {
				t.Errorf("key shares %v: want X25519MLKEM768 (0x11ec, 1216 bytes) after GREASE", got.KeyShares)
			}

			// wss: ALPN http/1.1 only, no ALPS; everything else the same.
			wss := parseHello(t, captureHello(t, BackendConfig{Type: "tls", DetectConfig: DetectConfig{Fingerprint: tc.name, Path: "/ws"}}))
			if !slices.Equal(wss.ALPN, []string{"http/1.1"}) || wss.ALPS != nil {
				t.Errorf("wss ALPN %v, ALPS %v: want [http/1.1] and none", wss.ALPN, wss.ALPS)
			}
			ref.ALPN, ref.ALPS = wss.ALPN, nil
			ref.Extensions = slices.DeleteFunc(slices.Clone(ref.Extensions), func(e string) bool { return e == "0x4469" || e == "0x44cd" })
			compareHello(t, wss, ref, tc.shuffled)
		})
	}
}

// compareHello reports every field of got that differs from want.
func compareHello(t *testing.T, got, want *helloFields, shuffled bool) {
	t.Helper()
	g, w := *got, *want
	if shuffled {
		// Only the GREASE positions are fixed; compare the rest as a set.
		for _, h := range []*helloFields{&g, &w} {
			var pos []string
			for i, e := range h.Extensions {
				if e == "GREASE" {
					pos = append(pos, "GREASE@"+strconv.Itoa(i))
				}
			}
			rest := slices.DeleteFunc(slices.Clone(h.Extensions), func(e string) bool { return e == "GREASE" })
			slices.Sort(rest)
			h.Extensions = append(pos, rest...)
		}
	}
	gv, wv := reflect.ValueOf(g), reflect.ValueOf(w)
	for i := 0; i < gv.NumField(); i++ {
		if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
			t.Errorf("%s: got %v, want %v", gv.Type().Field(i).Name, gv.Field(i).Interface(), wv.Field(i).Interface())
		}
	}
}
