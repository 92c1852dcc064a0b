package wire

import (
	"fmt"
	"testing"
)

// Benchmarks of the record hot path: one 16 KiB frame sealed or opened.
// Figures go in notes, never in assertions.

func benchCiphers() []CipherID { return []CipherID{CipherChaCha20Poly1305, CipherAES256GCM} }

func BenchmarkSealFrame(b *testing.B) {
	for _, c := range benchCiphers() {
		for _, size := range []int{64, 1400, MaxPayloadLen} {
			b.Run(fmt.Sprintf("%s/%d", c, size), func(b *testing.B) {
				var key [KeySize]byte
				a, _ := NewAEAD(c, &key)
				s := NewSealer(a)
				f := Frame{Type: FrameStream, Flags: FlagDAT, Stream: 1, Payload: make([]byte, size)}
				out := make([]byte, 0, size+RecordOverhead+FrameHeaderLen)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					var err error
					if out, err = s.SealFrame(out[:0], &f, 0); err != nil {
						b.Fatal(err)
					}
					if s.ctr.n > 1<<24 {
						s.ctr.n = 0
					}
				}
			})
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, c := range benchCiphers() {
		for _, size := range []int{64, 1400, MaxPayloadLen} {
			b.Run(fmt.Sprintf("%s/%d", c, size), func(b *testing.B) {
				var key [KeySize]byte
				a, _ := NewAEAD(c, &key)
				rec, err := NewSealer(a).SealFrame(nil, &Frame{Type: FrameStream, Flags: FlagDAT, Stream: 1, Payload: make([]byte, size)}, 0)
				if err != nil {
					b.Fatal(err)
				}
				o := NewOpener(a)
				dst := make([]byte, 0, len(rec))
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					o.ctr.n = 0 // the same record again, as if it were the first
					if _, n, err := o.Open(dst[:0], rec); err != nil || n != len(rec) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkParseFrame(b *testing.B) {
	body := AppendFrame(nil, &Frame{Type: FrameStream, Flags: FlagDAT, Stream: 7, Payload: make([]byte, 1400)}, 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseFrame(body); err != nil {
			b.Fatal(err)
		}
	}
}
