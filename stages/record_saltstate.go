package stages

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"usocks/wire"
)

// The local salt store's state file, so that replay protection holds
// across a restart (SPEC-v2.md §3, "Replay"). A server saves it at start,
// every few seconds while it runs and once more when it stops:
//
//	magic "usocks-salts-v1\n" (16) | flags (1, bit 0: clean stop)
//	saved_at (8, Unix ms) | valid_to (8, Unix ms) | floor (8) | width (8)
//	buckets: index (8) | n (4) | n × (user id (16) | salt (32)), ...
//	end: index 0xffffffffffffffff
//	SHA-256 of everything before (32)
//
// Integers are big-endian. A clean file holds every salt the run accepted.
// Any other file holds every salt accepted before saved_at, and the run
// accepted none after valid_to (the store refuses new salts when its state
// was not saved in time), so the next run refuses timestamps up to valid_to
// + skew: those a lost salt could carry.

const saltStateMagic = "usocks-salts-v1\n"

// SaveState writes the store's state to w. clean says that no salt will
// be accepted after this (the server has stopped); otherwise validTo is
// the promise that none will be accepted after it unless saved again
// (see ArmDeadline). The store is copied one bucket at a time, so
// handshakes wait for one bucket's copy at most.
func (s *LocalSaltStore) SaveState(w io.Writer, clean bool, savedAt, validTo time.Time) error {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	var hdr [16 + 1 + 32]byte
	copy(hdr[:], saltStateMagic)
	if clean {
		hdr[16] = 1
	}
	s.mu.Lock()
	floor, width := s.floor, s.width
	idx := make([]int64, 0, len(s.buckets))
	for i := range s.buckets {
		idx = append(idx, i)
	}
	s.mu.Unlock()
	binary.BigEndian.PutUint64(hdr[17:], uint64(savedAt.UnixMilli()))
	binary.BigEndian.PutUint64(hdr[25:], uint64(validTo.UnixMilli()))
	binary.BigEndian.PutUint64(hdr[33:], uint64(floor))
	binary.BigEndian.PutUint64(hdr[41:], uint64(width))
	_, _ = bw.Write(hdr[:])
	var buf []byte
	for _, i := range idx {
		buf = binary.BigEndian.AppendUint64(buf[:0], uint64(i))
		s.mu.Lock()
		b := s.buckets[i]
		if b != nil {
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(b.salts)))
			for salt, user := range b.salts {
				buf = append(append(buf, user[:]...), salt[:]...)
			}
		}
		s.mu.Unlock()
		if b != nil {
			_, _ = bw.Write(buf)
		}
	}
	_, _ = bw.Write(binary.BigEndian.AppendUint64(nil, ^uint64(0)))
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(h.Sum(nil))
	return err
}

// ErrBadState means a state file is damaged or not a state file.
var ErrBadState = errors.New("salt state file damaged")

// RestoreState loads a state file saved by a previous run into an empty
// store and sets its floor from it, replacing the floor from start. It
// reports whether the previous run stopped cleanly. On ErrBadState the
// store knows nothing of the previous run, so it refuses every timestamp
// that one could have accepted: those up to now + skew.
func (s *LocalSaltStore) RestoreState(b []byte, now time.Time) (clean bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.advance(now.Unix() - s.skew)
	st, err := parseSaltState(b)
	if err != nil {
		s.floor = max64(s.floor, now.Unix()+s.skew+1)
		return false, err
	}
	s.floor = st.floor
	if !st.clean {
		s.floor = max64(s.floor, ceilUnix(time.UnixMilli(st.validTo))+s.skew+1)
	}
	for _, e := range st.entries {
		// The newest timestamp the old bucket could hold keeps the salt
		// longest, whatever this run's bucket width.
		s.bucket(((e.bucket+1)*st.width-1)/s.width).add(e.user, &e.salt)
		s.n++
	}
	return st.clean, nil
}

// ArmDeadline makes the store refuse new salts (ErrStoreDown) after t on
// the monotonic clock, unless armed again: the state saver's promise
// that no salt is accepted after the valid_to it wrote.
func (s *LocalSaltStore) ArmDeadline(t time.Time) {
	s.mu.Lock()
	s.failAfter = t
	s.mu.Unlock()
}

type saltState struct {
	clean        bool
	validTo      int64 // Unix ms
	floor, width int64
	entries      []saltEntry
}

type saltEntry struct {
	bucket int64
	user   wire.UserID
	salt   [wire.SaltSize]byte
}

func parseSaltState(b []byte) (*saltState, error) {
	const hdrLen = 16 + 1 + 32
	if len(b) < hdrLen+8+sha256.Size || string(b[:16]) != saltStateMagic {
		return nil, ErrBadState
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if h := sha256.Sum256(body); !bytes.Equal(h[:], sum) {
		return nil, ErrBadState
	}
	st := &saltState{clean: body[16]&1 == 1}
	st.validTo = int64(binary.BigEndian.Uint64(body[25:]))
	st.floor = int64(binary.BigEndian.Uint64(body[33:]))
	st.width = int64(binary.BigEndian.Uint64(body[41:]))
	if st.width < 1 || st.width > 1<<20 || st.floor < 0 {
		return nil, ErrBadState
	}
	r := body[hdrLen:]
	const entryLen = wire.IdentityHintSize + wire.SaltSize
	for {
		if len(r) < 8 {
			return nil, ErrBadState
		}
		i := binary.BigEndian.Uint64(r)
		r = r[8:]
		if i == ^uint64(0) {
			break
		}
		if i > 1<<62 || len(r) < 4 {
			return nil, ErrBadState
		}
		n := int(binary.BigEndian.Uint32(r))
		r = r[4:]
		if n > len(r)/entryLen {
			return nil, ErrBadState
		}
		for k := 0; k < n; k++ {
			e := saltEntry{bucket: int64(i)}
			copy(e.user[:], r)
			copy(e.salt[:], r[wire.IdentityHintSize:])
			st.entries = append(st.entries, e)
			r = r[entryLen:]
		}
	}
	if len(r) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", ErrBadState)
	}
	return st, nil
}
