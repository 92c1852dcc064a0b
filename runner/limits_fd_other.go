//go:build !unix

package runner

// raiseFileLimit: no RLIMIT_NOFILE here; descriptors are not budgeted.
func raiseFileLimit() (soft, hard int64, err error) { return 0, 0, nil }
