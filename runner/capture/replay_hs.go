package capture

import (
	"fmt"
	"time"

	"usocks/stages"
	"usocks/wire"
)

// handshake verifies the v2 flights with the PSK as their bytes arrive.
func (rp *replayer) handshake(s *rsess, e *Event) {
	if rp.legacy() {
		rp.note(s, "handshake bytes in a v1 capture (v1 has no handshake)")
		return
	}
	if len(s.hs[e.Dir]) < 1<<20 {
		s.hs[e.Dir] = append(s.hs[e.Dir], e.Data...)
	}
	if rp.psk == nil {
		return // said in the header notes
	}
	cd := rp.clientDir()
	if e.Dir == cd {
		rp.clientFlight(s, cd)
	} else {
		rp.serverFlight(s, e.Dir)
	}
}

func (rp *replayer) clientFlight(s *rsess, d Dir) {
	buf := s.hs[d]
	if s.chDone {
		if s.hello != nil {
			rp.note(s, "more bytes from the client after its flight, inside the handshake")
		}
		return
	}
	if s.chr == nil {
		if len(buf) < wire.ClientPrefixLen {
			return
		}
		r := wire.NewClientHelloReader(rp.psk)
		rest, err := r.OpenPrefix(buf[:wire.ClientPrefixLen])
		if err != nil {
			s.chDone = true
			rp.fail(s, d, nil, "client hello does not open under this key: wrong --key, or not a usocks v2 client (the server answers such input with silence)")
			return
		}
		s.chr, s.chRest = r, rest
	}
	if len(buf) < wire.ClientPrefixLen+s.chRest {
		return
	}
	s.chDone = true
	h, err := s.chr.OpenRest(buf[wire.ClientPrefixLen : wire.ClientPrefixLen+s.chRest])
	if err != nil {
		rp.fail(s, d, nil, "client hello: its variable part fails authentication (tampered in transit)")
		return
	}
	s.hello = h
	ts := time.Unix(int64(h.Time), 0)
	rp.emit(&rline{Session: s.id, Dir: d.String(), Kind: "hello", Info: fmt.Sprintf(
		"client hello authentic: time %s (%s from capture start), cipher %s, padding %d, flight %d bytes",
		ts.UTC().Format(time.RFC3339), signedSeconds(ts.Sub(rp.hdr.Start.Truncate(time.Second))), h.Cipher, h.PadLen, wire.ClientPrefixLen+s.chRest)})
	if h.Cipher != wire.CipherChaCha20Poly1305 && h.Cipher != wire.CipherAES256GCM {
		rp.fail(s, d, nil, fmt.Sprintf("client hello asks for an unknown cipher %s", h.Cipher))
	}
	if skew := ts.Sub(rp.hdr.Start.Truncate(time.Second)); skew > stages.DefaultSkew+time.Second || skew < -stages.DefaultSkew-time.Second {
		rp.fail(s, d, nil, fmt.Sprintf("client clock differs from the capturing host's by %s: outside the default window of %s", signedSeconds(skew), stages.DefaultSkew))
	}
	if len(buf) > wire.ClientPrefixLen+s.chRest {
		rp.note(s, "more bytes from the client after its flight, inside the handshake")
	}
}

func (rp *replayer) serverFlight(s *rsess, d Dir) {
	if s.shDone {
		if s.shr != nil {
			rp.note(s, "more bytes from the server after its reply, inside the handshake")
		}
		return
	}
	if s.hello == nil {
		rp.note(s, "server reply not verified: the client hello was not verified")
		return
	}
	buf := s.hs[d]
	if s.shr == nil {
		if len(buf) < wire.ServerPrefixLen {
			return
		}
		r := wire.NewServerHelloReader(rp.psk, s.hello.Salt)
		rest, err := r.OpenPrefix(buf[:wire.ServerPrefixLen])
		if err != nil {
			s.shDone = true
			rp.fail(s, d, nil, "server reply does not open under this key for this client hello: wrong key, spliced or replayed reply")
			return
		}
		s.shr, s.shRest = r, rest
	}
	if len(buf) < wire.ServerPrefixLen+s.shRest {
		return
	}
	s.shDone = true
	h, err := s.shr.OpenRest(buf[wire.ServerPrefixLen : wire.ServerPrefixLen+s.shRest])
	if err != nil {
		rp.fail(s, d, nil, "server reply: its variable part fails authentication (tampered in transit)")
		return
	}
	ts := time.Unix(int64(h.Time), 0)
	rp.emit(&rline{Session: s.id, Dir: d.String(), Kind: "hello", Info: fmt.Sprintf(
		"server reply authentic, answers this client's salt: time %s (%s from the client's), padding %d, flight %d bytes",
		ts.UTC().Format(time.RFC3339), signedSeconds(time.Duration(int64(h.Time)-int64(s.hello.Time))*time.Second), h.PadLen, wire.ServerPrefixLen+s.shRest)})
	if !rp.hdr.Plaintext {
		rp.note(s, "records are forward-secret: the PSK opens only the handshake, and the session keys were never written to this ciphertext capture. To decode records, capture with --capture-plaintext (it records the session keys). Listing captured frames only")
	}
}

func signedSeconds(d time.Duration) string {
	d = d.Round(time.Second)
	if d >= 0 {
		return "+" + d.String()
	}
	return d.String()
}

func (rp *replayer) keys(s *rsess, e *Event) {
	rp.emit(&rline{Session: s.id, Dir: "-", Kind: "keys", Info: "session data keys (" + e.Cipher + ") recorded by the plaintext capture: records will be decoded"})
	if !rp.hdr.Plaintext {
		rp.fail(s, DirNone, nil, "keys in a capture whose header says plaintext=false: the file was edited or is damaged")
	}
	if rp.legacy() {
		rp.fail(s, DirNone, nil, "v2 keys in a v1 capture (ignored)")
		return
	}
	c, err := wire.ParseCipher(e.Cipher)
	if err != nil || e.Cipher == "auto" || e.Cipher == "" {
		rp.fail(s, DirNone, nil, fmt.Sprintf("keys: unknown cipher %q", e.Cipher))
		return
	}
	in, out := e.S2C, e.C2S
	if rp.hdr.Role == "server" {
		in, out = e.C2S, e.S2C
	}
	for _, dk := range []struct {
		d Dir
		k []byte
	}{{DirIn, in}, {DirOut, out}} {
		d, k := dk.d, dk.k
		if s.dec[d] != nil || s.gap {
			continue
		}
		var key [wire.KeySize]byte
		copy(key[:], k)
		o, err := wire.NewOpenerKey(c, &key) // zeroes key
		if err != nil {
			rp.fail(s, d, nil, "keys: "+err.Error())
			continue
		}
		if !rp.roomFor(s) {
			o.Forget()
			return
		}
		s.dec[d] = newV2Decoder(o, &rp.live)
	}
}
