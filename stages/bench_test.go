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

// BenchmarkDecrypt feeds sealed records in backend-sized chunks through
// the decrypt stage and counts payload bytes. Records are sealed in
// rounds with the timer stopped; the timer runs while the stage opens
// them and a consumer releases the frames.
func BenchmarkDecrypt(b *testing.B) {
	for _, size := range []int{64, wire.MaxPayloadLen} {
		b.Run(map[int]string{64: "64B", wire.MaxPayloadLen: "16KiB"}[size], func(b *testing.B) {
			var key [wire.KeySize]byte
			sa, _ := wire.NewAEAD(wire.CipherAES256GCM, &key)
			oa, _ := wire.NewAEAD(wire.CipherAES256GCM, &key)
			sealer := wire.NewSealer(sa)
			chunks := make(chan Chunk, ChunkQueueLen)
			frames := make(chan Frame, DataQueueLen)
			dec := &Decrypt{Opener: wire.NewOpener(oa), In: chunks, Out: frames}
			done := make(chan error, 1)
			go func() { done <- dec.Run(context.Background()) }()
			got := make(chan struct{}, 1)
			const round = 1024
			go func() {
				n := 0
				for f := range frames {
					f.Release()
					if n++; n%round == 0 {
						got <- struct{}{}
					}
				}
			}()
			payload := make([]byte, size)
			ct := make([]byte, 0, round*(size+wire.RecordOverhead+wire.FrameHeaderLen))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for sent := 0; sent < b.N; sent += round {
				b.StopTimer()
				ct = ct[:0]
				for i := 0; i < round; i++ {
					ct, _ = sealer.SealFrame(ct, &wire.Frame{Type: wire.FrameStream, Flags: wire.FlagDAT, Stream: 1, Payload: payload}, 0)
				}
				b.StartTimer()
				for rest := ct; len(rest) > 0; {
					n := min(len(rest), chunkSize)
					chunks <- Chunk{B: rest[:n]}
					rest = rest[n:]
				}
				<-got
			}
			b.StopTimer()
			close(chunks)
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}
