package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestExtensionsRoundTrip(t *testing.T) {
	psk := PSK{1, 2, 3}
	cases := []struct {
		name string
		ext  Extensions
		pad  int
	}{
		{"none", nil, 7},
		{"defence", Extensions{{Type: ExtDefence, Value: []byte{2}}}, 0},
		{"defence and unknown", Extensions{{Type: ExtDefence, Value: []byte{3}}, {Type: 200, Value: bytes.Repeat([]byte{9}, 300)}}, 100},
		{"empty value", Extensions{{Type: 7}}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := ClientHello{Salt: [SaltSize]byte{5}, Time: 9, Cipher: CipherAES256GCM, Ext: c.ext, PadLen: c.pad}
			flight := AppendClientHello(nil, &psk, &ch)
			r := NewClientHelloReader(&psk)
			rest, err := r.OpenPrefix(flight[:ClientPrefixLen])
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.OpenRest(flight[ClientPrefixLen : ClientPrefixLen+rest])
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Ext) != len(c.ext) || got.PadLen != c.pad {
				t.Fatalf("client: got %d extensions, pad %d; want %d, %d", len(got.Ext), got.PadLen, len(c.ext), c.pad)
			}
			for i := range c.ext {
				if got.Ext[i].Type != c.ext[i].Type || !bytes.Equal(got.Ext[i].Value, c.ext[i].Value) {
					t.Errorf("client extension %d: got %v, want %v", i, got.Ext[i], c.ext[i])
				}
			}
			sh := ServerHello{Salt: [SaltSize]byte{6}, Time: 9, ClientSalt: ch.Salt, Ext: c.ext, PadLen: c.pad}
			reply := AppendServerHello(nil, &psk, &sh)
			sr := NewServerHelloReader(&psk, ch.Salt)
			rest, err = sr.OpenPrefix(reply[:ServerPrefixLen])
			if err != nil {
				t.Fatal(err)
			}
			gs, err := sr.OpenRest(reply[ServerPrefixLen : ServerPrefixLen+rest])
			if err != nil {
				t.Fatal(err)
			}
			if len(gs.Ext) != len(c.ext) || gs.PadLen != c.pad {
				t.Fatalf("server: got %d extensions, pad %d", len(gs.Ext), gs.PadLen)
			}
		})
	}
}

func TestParseExtensionsRules(t *testing.T) {
	cases := []struct {
		name    string
		in      []byte
		n, rest int
		err     error
	}{
		{"empty", nil, 0, 0, nil},
		{"only padding", []byte{0, 0, 0}, 0, 3, nil},
		{"padding content ignored", []byte{0, 1, 2}, 0, 3, nil},
		{"one", []byte{1, 0, 1, 2}, 1, 0, nil},
		{"one then padding", []byte{1, 0, 1, 2, 0, 0}, 1, 2, nil},
		{"unknown skipped", []byte{9, 0, 2, 7, 7, 1, 0, 1, 3}, 2, 0, nil},
		{"short header", []byte{1, 0}, 0, 0, ErrHandshake},
		{"value past end", []byte{1, 0, 5, 1}, 0, 0, ErrHandshake},
		{"duplicate", []byte{1, 0, 1, 2, 1, 0, 1, 3}, 0, 0, ErrHandshake},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ext, rest, err := parseExtensions(c.in)
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
			if err == nil && (len(ext) != c.n || rest != c.rest) {
				t.Fatalf("got %d extensions, rest %d; want %d, %d", len(ext), rest, c.n, c.rest)
			}
		})
	}
}

func TestExtensionsCountAgainstPadLimit(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("extensions plus padding over MaxHandshakePad did not panic")
		}
	}()
	psk := PSK{}
	AppendClientHello(nil, &psk, &ClientHello{Ext: Extensions{{Type: 5, Value: make([]byte, 10)}}, PadLen: MaxHandshakePad})
}

func FuzzParseExtensions(f *testing.F) {
	f.Add([]byte{1, 0, 1, 2, 0, 0})
	f.Add([]byte{9, 0, 2, 7, 7})
	f.Fuzz(func(t *testing.T, b []byte) {
		ext, rest, err := parseExtensions(b)
		if err != nil {
			return
		}
		if got := ext.encodedLen() + rest; got != len(b) {
			t.Fatalf("extensions %d + rest %d != input %d", ext.encodedLen(), rest, len(b))
		}
		if enc := ext.appendTo(nil); !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func TestDefenceOf(t *testing.T) {
	cases := []struct {
		name string
		ext  Extensions
		want DefencePolicy
		err  bool
	}{
		{"missing means off", nil, DefenceOff, false},
		{"standard", Extensions{DefenceExt(DefenceStandard)}, DefenceStandard, false},
		{"max", Extensions{DefenceExt(DefenceMax)}, DefenceMax, false},
		{"unknown policy", Extensions{{Type: ExtDefence, Value: []byte{4}}}, 0, true},
		{"too long", Extensions{{Type: ExtDefence, Value: []byte{1, 0}}}, 0, true},
		{"empty", Extensions{{Type: ExtDefence}}, 0, true},
	}
	for _, c := range cases {
		got, err := DefenceOf(c.ext)
		if (err != nil) != c.err || (!c.err && got != c.want) {
			t.Errorf("%s: got %v, %v", c.name, got, err)
		}
	}
	for _, s := range []string{"off", "light", "standard", "max"} {
		p, err := ParseDefencePolicy(s)
		if err != nil || p.String() != s {
			t.Errorf("ParseDefencePolicy(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParseDefencePolicy("high"); err == nil {
		t.Error("ParseDefencePolicy(high) did not fail")
	}
}
