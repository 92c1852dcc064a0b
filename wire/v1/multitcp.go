package v1

import "errors"

// multi_tcp defaults (spec §5.2); both ends must agree on the values.
const (
	// DefaultLanes is the default number of TCP connections.
	DefaultLanes = 5
	// DefaultStripeSize is the default stripe size (blocksize) in bytes.
	DefaultStripeSize = 8192
)

// Errors of the multi_tcp striping helpers. Compare with errors.Is.
var (
	// ErrStripeConfig: number or blocksize is not positive.
	ErrStripeConfig = errors.New("usocks/v1: multi_tcp number and blocksize must be positive")
	// ErrStripeOverrun: Reassembler.Advance was told about more bytes
	// than the current stripe has left.
	ErrStripeOverrun = errors.New("usocks/v1: read past the end of the current stripe")
)

// Lane returns the lane (connection index, in the client's connect
// order) that carries the byte at offset of a direction's stream:
// floor(offset / blocksize) mod number. Offset 0 is the first byte of
// the sync block. number and blocksize must be positive.
func Lane(offset int64, number, blocksize int) int {
	return int(offset / int64(blocksize) % int64(number))
}

func checkStripe(number, blocksize int) error {
	if number <= 0 || blocksize <= 0 {
		return ErrStripeConfig
	}
	return nil
}

// Striper is the sending side of multi_tcp striping for one direction.
// It remembers the stream offset across writes for the life of the
// backend; striping ignores packet and write boundaries.
type Striper struct {
	number, blocksize int
	offset            int64
}

// NewStriper returns a Striper for number lanes of blocksize-byte
// stripes, starting at offset 0.
func NewStriper(number, blocksize int) (*Striper, error) {
	if err := checkStripe(number, blocksize); err != nil {
		return nil, err
	}
	return &Striper{number: number, blocksize: blocksize}, nil
}

// Offset returns the stream offset of the next byte to be sent.
func (s *Striper) Offset() int64 { return s.offset }

// Next claims the next bytes of the stream: of the next n bytes to be
// sent, the first take (1 to n, for n > 0) go to lane. The offset
// advances by take. Loop until the write is used up. n <= 0 returns
// (lane of the next byte, 0) and claims nothing.
func (s *Striper) Next(n int) (lane, take int) {
	lane = Lane(s.offset, s.number, s.blocksize)
	if n <= 0 {
		return lane, 0
	}
	left := s.blocksize - int(s.offset%int64(s.blocksize))
	take = min(n, left)
	s.offset += int64(take)
	return lane, take
}

// Split appends the bytes of one write p to the per-lane buffers and
// returns them; lanes must have one entry per lane (len(lanes) == number).
func (s *Striper) Split(lanes [][]byte, p []byte) [][]byte {
	for len(p) > 0 {
		lane, take := s.Next(len(p))
		lanes[lane] = append(lanes[lane], p[:take]...)
		p = p[take:]
	}
	return lanes
}

// Reassembler is the receiving side of multi_tcp striping: it says which
// lane to read next and how much of the current stripe is left. The
// receiver reads only from the lane whose turn it is; end of file on
// that lane ends the whole backend.
type Reassembler struct {
	number, blocksize int
	lane, left        int
	offset            int64
}

// NewReassembler returns a Reassembler for number lanes of
// blocksize-byte stripes, starting at lane 0.
func NewReassembler(number, blocksize int) (*Reassembler, error) {
	if err := checkStripe(number, blocksize); err != nil {
		return nil, err
	}
	return &Reassembler{number: number, blocksize: blocksize, left: blocksize}, nil
}

// Want returns the lane to read from now and the most bytes to read
// from it (what is left of the current stripe, always at least 1).
func (r *Reassembler) Want() (lane, n int) { return r.lane, r.left }

// Advance records that n bytes were read from the lane returned by
// Want. After a whole stripe the turn passes to the next lane. It
// returns ErrStripeOverrun, and changes nothing, if n is negative or
// larger than what Want allowed.
func (r *Reassembler) Advance(n int) error {
	if n < 0 || n > r.left {
		return ErrStripeOverrun
	}
	r.left -= n
	r.offset += int64(n)
	if r.left == 0 {
		r.lane = (r.lane + 1) % r.number
		r.left = r.blocksize
	}
	return nil
}

// Offset returns the stream offset of the next byte to be read.
func (r *Reassembler) Offset() int64 { return r.offset }
