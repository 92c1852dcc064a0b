package capture

import (
	"errors"

	"usocks/stages"
	"usocks/wire"
	v1 "usocks/wire/v1"
)

// decoded is what the record decoder opened of one frame.
type decoded struct {
	typ    wire.FrameType
	flags  wire.Flags
	stream uint16
	n, pad int
	data   []byte
}

// recDecoder decodes one direction's records with the decoder the decrypt
// stages use, called synchronously: wire.RecordReader for v2 (the same
// reassembly, rekeying and errors as stages.Decrypt), v1.Opener with
// stages.FrameOfV1 and stages.EndV1 for v1 (as stages.DecryptV1). It
// lists every frame opened, PAD and KEYUPDATE included.
type recDecoder struct {
	v2       *wire.RecordReader
	v1       *v1.Opener
	got      []decoded
	notes    []string
	finished bool
	sawClose bool
	sawReset bool
	lastType wire.FrameType
	live     *int // the replayer's count of decoders holding buffers
}

// newV2Decoder reads o's records; o follows KEYUPDATE frames if it holds
// its key (wire.NewOpenerKey).
func newV2Decoder(o *wire.Opener, live *int) *recDecoder {
	rr := wire.NewRecordReader(o, 4096)
	*live++
	return &recDecoder{v2: rr, live: live}
}

func newV1Decoder(key [v1.KeySize]byte, live *int) *recDecoder {
	*live++
	return &recDecoder{v1: v1.NewOpener(key), live: live}
}

// setFinished marks the decoder as no longer fed and drops its buffers.
func (d *recDecoder) setFinished() {
	if !d.finished {
		d.finished = true
		d.v2, d.v1 = nil, nil
		*d.live--
	}
}

func (d *recDecoder) add(f *wire.Frame, pad int) {
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

// feed decodes one captured chunk: it returns the frames opened from it,
// and the error decoding stopped with, if it stopped there.
func (d *recDecoder) feed(b []byte) ([]decoded, error) {
	d.got = d.got[:0]
	var err error
	if d.v2 != nil {
		err = d.feedV2(b)
	} else {
		err = d.feedV1(b)
	}
	if err != nil {
		d.setFinished()
	}
	return d.got, err
}

func (d *recDecoder) feedV2(b []byte) error {
	d.v2.Feed(b)
	for {
		f, pad, ok, err := d.v2.Next(nil)
		if ok {
			d.add(&f, pad)
		}
		if err != nil || !ok {
			return err
		}
	}
}

func (d *recDecoder) feedV1(b []byte) error {
	d.v1.Feed(b)
	for {
		ev, err := d.v1.Next()
		if errors.Is(err, v1.ErrNeedMore) {
			return nil
		}
		if err != nil {
			return err
		}
		f, ok, err := stages.FrameOfV1(ev)
		if err != nil {
			// The stage logs and drops such a message.
			d.notes = append(d.notes, "dropping invalid v1 tunnel message: "+err.Error())
			continue
		}
		if ok {
			d.add(&f, 0)
		}
	}
}

// finish ends the input (end of stream): stages.ErrTruncated for a v2
// record cut short, v1's error for a v1 stream that ended badly.
func (d *recDecoder) finish() ([]decoded, error) {
	d.got = d.got[:0]
	if d.finished {
		return d.got, nil
	}
	var err error
	switch {
	case d.v2 != nil && d.v2.Buffered() > 0:
		err = stages.ErrTruncated
	case d.v1 != nil:
		err = stages.EndV1(d.v1)
	}
	d.setFinished()
	return d.got, err
}

func (d *recDecoder) takeNotes() []string {
	n := d.notes
	d.notes = nil
	return n
}

// stop ends decoding without judging how the stream ended.
func (d *recDecoder) stop() { d.setFinished() }
