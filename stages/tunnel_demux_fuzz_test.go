package stages

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"usocks/wire"
)

// fuzzIDs are the stream ids fuzzed frames use: a few ordinary ones, so
// that frames meet streams they opened, and the two reserved ones.
var fuzzIDs = [...]uint16{1, 2, 3, 300, 0, 0xffff}

// fuzzFrames turns fuzz input into frames, 4 bytes of header each (type,
// flags, stream, payload length) and then the payload. Any frame an
// authenticated peer could send comes out, reserved types and flags too.
func fuzzFrames(data []byte) []wire.Frame {
	var fs []wire.Frame
	for len(data) >= 4 {
		f := wire.Frame{Type: wire.FrameType(data[0] % 10), Flags: wire.Flags(data[1]), Stream: fuzzIDs[int(data[2])%len(fuzzIDs)]}
		n := min(int(data[3]%64), len(data)-4)
		f.Payload = data[4 : 4+n]
		data = data[4+n:]
		fs = append(fs, f)
	}
	return fs
}

// FuzzDemux feeds the decrypt and demux stages records sealed under the
// session key, so every frame is authenticated and only the frames
// themselves are hostile. Whatever they are, the session must end (no
// deadlock) with one of the session errors, every stream actor must have
// finished and closed its target, and the demux may answer only what it
// was sent: RSTs for ids it saw, a PONG per PING at most.
func FuzzDemux(f *testing.F) {
	f.Add(byte(1), []byte{0, 1, 1, 0, 0, 2, 1, 3, 'a', 'b', 'c', 0, 4, 1, 0})                    // SYN, DAT, FIN
	f.Add(byte(1), []byte{0, 1, 1, 0, 0, 1, 1, 0, 0, 8, 1, 0, 3, 0, 4, 0})                       // duplicate SYN, RST, CLOSE
	f.Add(byte(0), []byte{5, 0, 4, 2, 'h', 'i', 7, 0, 2, 0, 1, 0, 5, 4, 0, 0, 0, 9, 4, 0, 5, 0}) // PING, DATAGRAM, WINDOW, RESET
	f.Add(byte(1), []byte{0, 0x13, 2, 1, 'x', 1, 0, 2, 4, 0, 0, 1, 0, 9, 0, 4, 0})               // SYN|DAT|RST, WINDOW, ACK
	f.Fuzz(func(t *testing.T, role byte, data []byte) {
		frames := fuzzFrames(data)
		var key [wire.KeySize]byte
		a, _ := wire.NewAEAD(wire.CipherAES256GCM, &key)
		sealer := wire.NewSealer(a)
		var stream []byte
		sent := map[uint16]bool{}
		pings := 0
		for i := range frames {
			var err error
			if stream, err = sealer.SealFrame(stream, &frames[i], 0); err != nil {
				t.Fatal(err)
			}
			sent[frames[i].Stream] = true
			if frames[i].Type == wire.FramePing {
				pings++
			}
		}

		chunks := make(chan Chunk, 2)
		frameq := make(chan Frame, FrameQueueLen)
		// Split the ciphertext where the input says, so reassembly is
		// exercised too.
		cut := int(role) * len(stream) / 256
		chunks <- Chunk{B: stream[:cut]}
		chunks <- Chunk{B: stream[cut:]}
		close(chunks)
		oa, _ := wire.NewAEAD(wire.CipherAES256GCM, &key)
		dec := &Decrypt{Opener: wire.NewOpener(oa), In: chunks, Out: frameq}

		fe := &testFrontend{mode: "discard"}
		control, data2 := make(chan Frame, ControlQueueLen), make(chan Frame, DataQueueLen)
		d := &Demux{Role: Role(role & 1), In: frameq, Data: data2, Control: control, Frontend: fe, Log: testLog(), Stats: new(Stats)}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		var answers []wire.Frame
		var drained sync.WaitGroup
		drained.Add(2)
		stopDrain := make(chan struct{})
		go func() {
			defer drained.Done()
			for {
				select {
				case f := <-control:
					answers = append(answers, wire.Frame{Type: f.Type, Flags: f.Flags, Stream: f.Stream})
					f.Release()
				case <-stopDrain:
					return
				}
			}
		}()
		go func() {
			defer drained.Done()
			for {
				select {
				case f := <-data2:
					f.Release()
				case <-stopDrain:
					return
				}
			}
		}()

		decErr := make(chan error, 1)
		go func() { decErr <- dec.Run(ctx) }()
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("demux did not end on %d frames", len(frames))
		}
		<-decErr     // a malformed frame ends decrypt with ErrProtocol; the demux then sees the end of its input
		fe.wg.Wait() // every target was closed by its stream
		close(stopDrain)
		drained.Wait()
		for len(control) > 0 {
			f := <-control
			answers = append(answers, f.Frame)
			f.Release()
		}
		for len(data2) > 0 {
			f := <-data2
			f.Release()
		}

		switch {
		case errors.Is(err, ErrInsecureClose), errors.Is(err, ErrPeerClosed),
			errors.Is(err, ErrPeerReset), errors.Is(err, ErrProtocol):
		default:
			t.Fatalf("demux ended with %v", err)
		}
		pongs := 0
		for _, a := range answers {
			switch {
			case a.Type == wire.FramePong:
				pongs++
			case a.Type == wire.FrameStream && a.Flags == wire.FlagRST:
				if !sent[a.Stream] {
					t.Fatalf("RST for stream %d, which no frame named", a.Stream)
				}
			case a.Type == wire.FrameWindow && sent[a.Stream]:
			default:
				t.Fatalf("unexpected answer %v", a)
			}
		}
		if pongs > pings {
			t.Fatalf("%d PONGs for %d PINGs", pongs, pings)
		}
		if opened := d.Stats.StreamsOpened.Load(); opened != fe.opens.Load() {
			t.Fatalf("%d streams counted, %d opened by the frontend", opened, fe.opens.Load())
		}
	})
}
