package stages

import (
	"context"
	"testing"

	"usocks/wire"
)

// BenchmarkMuxEncrypt pushes frames through the mux and encrypt stages
// (the tunnel's send path without sockets) and counts payload bytes.
func BenchmarkMuxEncrypt(b *testing.B) {
	for _, size := range []int{64, wire.MaxPayloadLen} {
		b.Run(map[int]string{64: "64B", wire.MaxPayloadLen: "16KiB"}[size], func(b *testing.B) {
			var key [wire.KeySize]byte
			a, _ := wire.NewAEAD(wire.CipherAES256GCM, &key)
			data := make(chan Frame, DataQueueLen)
			batches := make(chan Batch, BatchQueueLen)
			sealed := make(chan Sealed, BatchQueueLen)
			ctx, cancel := context.WithCancel(context.Background())
			mux := &Mux{Control: make(chan Frame), Data: data, Out: batches, Shutdown: make(chan struct{})}
			enc := &Encrypt{Sealer: wire.NewSealer(a), In: batches, Out: sealed}
			done := make(chan struct{}, 2)
			go func() { _ = mux.Run(ctx); done <- struct{}{} }()
			go func() { _ = enc.Run(ctx); done <- struct{}{} }()
			drained := make(chan int64)
			go func() {
				var n int64
				for s := range sealed {
					n += int64(len(s.B))
					enc.Recycle(s)
				}
				drained <- n
			}()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				buf := getBuf(size)
				data <- Frame{Frame: wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: buf.B[:size]}, buf: buf}
			}
			cancel()
			<-done
			<-done
			<-drained
		})
	}
}
