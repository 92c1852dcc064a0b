//go:build usocks_poison

package stages

// A build with tag usocks_poison checks every payload buffer's release
// (bufLedger) in the whole process, end-to-end tests included: a buffer
// used after its release reads as poisonByte runs, a second release
// panics with both stacks (Taskfile task soak-poison).
func init() { watch.Store(newBufLedger(2048, true)) }
