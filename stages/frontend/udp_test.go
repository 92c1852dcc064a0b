package frontend

import (
	"bytes"
	"net/netip"
	"testing"
)

func FuzzParseUDPDatagram(f *testing.F) {
	f.Add(AppendUDPDatagram(nil, netip.MustParseAddrPort("127.0.0.1:53"), []byte("q")))
	f.Add(AppendUDPDatagram(nil, netip.MustParseAddrPort("[::1]:443"), nil))
	f.Add([]byte{0, 0, 0, 3, 7, 'e', 'x', '.', 't', 'e', 's', 't', 0, 53, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, data, err := ParseUDPDatagram(b)
		if err != nil {
			return
		}
		if len(data) > len(b) {
			t.Fatal("data longer than the datagram")
		}
		if a, perr := netip.ParseAddr(h.Host); perr == nil {
			again := AppendUDPDatagram(nil, netip.AddrPortFrom(a, h.Port), data)
			h2, d2, err := ParseUDPDatagram(again)
			if err != nil || h2.Port != h.Port || !bytes.Equal(d2, data) {
				t.Fatalf("round trip: %+v %x %v", h2, d2, err)
			}
		}
	})
}
