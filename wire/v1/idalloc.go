package v1

import "errors"

// The range of connection ids the client hands out (spec §4.2). The
// original never uses 0 or 65535.
const (
	FirstID = 1
	LastID  = 65534
)

// Errors of the id allocator. Compare with errors.Is.
var (
	// ErrNoIDAvailable: all 65534 ids are in use (the original's
	// NoIDAvailableError, on which its client died).
	ErrNoIDAvailable = errors.New("usocks/v1: no connection id available")
	// ErrIDNotAllocated: Recycle was given an id that is not currently
	// handed out. The allocator is unchanged.
	ErrIDNotAllocated = errors.New("usocks/v1: connection id not allocated")
)

// IDAllocator is the client's connection-id allocator, matching the
// original (spec §4.2, tunnel.json id_allocator):
//   - a recycled (freed) id is handed out first; this implementation
//     returns the most recently freed one, the original an arbitrary one;
//   - otherwise the next never-used id, counting up from 1 to 65534;
//   - when freed ids sit just below the counter, the counter moves back
//     down over them, and they leave the free set.
//
// The zero value is ready to use. It uses about 8 KiB plus a stack of
// freed ids; it is not safe for concurrent use.
type IDAllocator struct {
	next  uint32                         // next never-used id minus FirstID
	freed [(LastID + 1 + 63) / 64]uint64 // bitmap of recycled ids
	stack []uint16                       // recycled ids, newest last; may hold stale entries
}

func (a *IDAllocator) isFree(id uint16) bool { return a.freed[id/64]&(1<<(id%64)) != 0 }
func (a *IDAllocator) setFree(id uint16)     { a.freed[id/64] |= 1 << (id % 64) }
func (a *IDAllocator) clearFree(id uint16)   { a.freed[id/64] &^= 1 << (id % 64) }

// NextID returns the next never-used id the counter would hand out
// (LastID+1 once the counter is exhausted).
func (a *IDAllocator) NextID() int { return int(a.next) + FirstID }

// Allocate returns a free id: a recycled one if there is any, otherwise
// the next never-used one. It returns ErrNoIDAvailable when all ids
// from 1 to 65534 are in use.
func (a *IDAllocator) Allocate() (uint16, error) {
	for len(a.stack) > 0 {
		id := a.stack[len(a.stack)-1]
		a.stack = a.stack[:len(a.stack)-1]
		if a.isFree(id) {
			a.clearFree(id)
			return id, nil
		}
	}
	if a.NextID() > LastID {
		return 0, ErrNoIDAvailable
	}
	id := uint16(a.NextID())
	a.next++
	return id, nil
}

// Recycle returns id to the allocator once the peer's FIN or RST for it
// has arrived (Result.Released). Ids just below the counter are given
// back to the counter. It returns ErrIDNotAllocated, and changes
// nothing, if id is not currently allocated.
func (a *IDAllocator) Recycle(id uint16) error {
	if int(id) < FirstID || int(id) >= a.NextID() || a.isFree(id) {
		return ErrIDNotAllocated
	}
	a.setFree(id)
	for a.next > 0 && a.isFree(uint16(a.NextID()-1)) {
		a.next--
		a.clearFree(uint16(a.NextID()))
	}
	if a.isFree(id) {
		if len(a.stack) >= 2*LastID { // drop stale entries
			a.stack = a.Recycled()
		}
		a.stack = append(a.stack, id)
	}
	return nil
}

// Recycled returns the ids currently in the free set, in increasing
// order (the counter's ids are not included).
func (a *IDAllocator) Recycled() []uint16 {
	var ids []uint16
	for id := FirstID; id < a.NextID(); id++ {
		if a.isFree(uint16(id)) {
			ids = append(ids, uint16(id))
		}
	}
	return ids
}
