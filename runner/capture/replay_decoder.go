package capture

import (
	"context"
	"io"

	"github.com/sirupsen/logrus"

	"usocks/stages"
	"usocks/wire"
	v1 "usocks/wire/v1"
)

// decoded is what a decode stage tapped of one frame.
type decoded struct {
	typ    wire.FrameType
	flags  wire.Flags
	stream uint16
	n, pad int
	data   []byte
}

// recDecoder runs one decode stage (stages.Decrypt or stages.DecryptV1)
// on its own channels. feed hands it one captured chunk and then an empty
// chunk: both stages treat an empty chunk as "no new bytes", so the
// hand-over of the empty one proves the stage has finished the captured
// one, and every frame it tapped belongs to that chunk. The tap and notes
// are written by the stage goroutine before that hand-over and read by
// the caller after it (channel synchronization, no lock needed).
type recDecoder struct {
	in       chan stages.Chunk
	done     chan struct{}
	err      error
	got      []decoded
	notes    []string
	finished bool
	sawClose bool
	sawReset bool
	lastType wire.FrameType
	cancel   context.CancelFunc
	live     *int // the replayer's count of running stages
}

func newRecDecoder(live *int) (*recDecoder, context.Context, chan stages.Frame) {
	ctx, cancel := context.WithCancel(context.Background())
	*live++
	return &recDecoder{in: make(chan stages.Chunk), done: make(chan struct{}), cancel: cancel, live: live}, ctx, make(chan stages.Frame, 16)
}

// setFinished marks the stage as no longer fed.
func (d *recDecoder) setFinished() {
	if !d.finished {
		d.finished = true
		*d.live--
	}
}

// start runs the stage; its output frames are released (the tap has seen them).
func (d *recDecoder) start(ctx context.Context, out chan stages.Frame, run func(context.Context) error) {
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for f := range out {
			f.Release()
		}
	}()
	go func() {
		err := run(ctx)
		<-drained
		d.err = err
		close(d.done)
	}()
}

func (d *recDecoder) tap(f *wire.Frame, pad int) {
	g := decoded{typ: f.Type, flags: f.Flags, stream: f.Stream, n: len(f.Payload), pad: pad}
	if len(f.Payload) > 0 {
		g.data = append([]byte(nil), f.Payload...)
	}
	d.got = append(d.got, g)
	d.lastType = f.Type
	if f.Type == wire.FrameClose {
		d.sawClose = true
	}
	if f.Type == wire.FrameReset {
		d.sawReset = true
	}
}

// noteHook turns the stage's log warnings into replay errors.
type noteHook struct{ d *recDecoder }

func (h noteHook) Levels() []logrus.Level { return logrus.AllLevels[:logrus.WarnLevel+1] }
func (h noteHook) Fire(e *logrus.Entry) error {
	msg := e.Message
	if err, ok := e.Data[logrus.ErrorKey].(error); ok {
		msg += ": " + err.Error()
	}
	h.d.notes = append(h.d.notes, msg)
	return nil
}

func (d *recDecoder) log() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.WarnLevel)
	l.AddHook(noteHook{d})
	return logrus.NewEntry(l)
}

func startV2Decoder(o *wire.Opener, rk *stages.Rekeyer, live *int) *recDecoder {
	d, ctx, out := newRecDecoder(live)
	st := &stages.Decrypt{Opener: o, Rekey: rk, In: d.in, Out: out, Log: d.log(), Tap: d.tap}
	d.start(ctx, out, st.Run)
	return d
}

func startV1Decoder(key [v1.KeySize]byte, live *int) *recDecoder {
	d, ctx, out := newRecDecoder(live)
	st := &stages.DecryptV1{Opener: v1.NewOpener(key), In: d.in, Out: out, Log: d.log(), Tap: d.tap}
	d.start(ctx, out, st.Run)
	return d
}

func (d *recDecoder) send(c stages.Chunk) bool {
	select {
	case d.in <- c:
		return true
	case <-d.done:
		return false
	}
}

// feed decodes one captured chunk: it returns the frames the stage tapped
// while processing it, and the stage's error if it stopped there.
func (d *recDecoder) feed(b []byte) ([]decoded, error) {
	d.got = d.got[:0]
	if d.send(stages.Chunk{B: b}) && d.send(stages.Chunk{}) {
		return d.got, nil
	}
	d.setFinished()
	d.cancel()
	return d.got, d.err
}

// finish ends the input (end of stream) and returns what the stage did
// then: ErrTruncated for a record cut short (v2), v1's final error.
func (d *recDecoder) finish() ([]decoded, error) {
	d.got = d.got[:0]
	if !d.finished {
		d.setFinished()
		close(d.in)
		<-d.done
		d.cancel()
	}
	return d.got, d.err
}

func (d *recDecoder) takeNotes() []string {
	n := d.notes
	d.notes = nil
	return n
}

// stop ends the stage without judging how the stream ended.
func (d *recDecoder) stop() {
	if d.finished {
		<-d.done
		return
	}
	d.setFinished()
	d.cancel()
	<-d.done
}
