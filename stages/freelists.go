package stages

import "sync"

// Kept buffers on idle. An encrypt stage keeps the buffers its sealed
// batches were written from, for the next batches (BatchQueueLen+2 of
// them); after a bulk transfer each has grown to a batch of up to
// maxBatchBytes and they would stay for the session's life. The process's
// memory trimmer (runner/memtrim.go), once the process is quiet after a
// busy spell, calls TrimKeptBuffers: the lists are emptied and the next
// batches take fresh buffers.

// keptLists are the free lists of the running encrypt stages.
var keptLists sync.Map // chan []byte → struct{}

// keepList registers an encrypt stage's free list; the returned function
// forgets it.
func keepList(free chan []byte) (forget func()) {
	keptLists.Store(free, struct{}{})
	return func() { keptLists.Delete(free) }
}

// TrimKeptBuffers empties every running encrypt stage's list of kept
// buffers and returns how many it dropped. It never blocks, and a stage
// that seals meanwhile takes or makes a buffer as usual.
func TrimKeptBuffers() int {
	n := 0
	keptLists.Range(func(k, _ any) bool {
		free := k.(chan []byte)
		for {
			select {
			case <-free:
				n++
			default:
				return true
			}
		}
	})
	return n
}
