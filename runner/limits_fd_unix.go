//go:build unix

package runner

import "syscall"

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns both (0: unlimited).
func raiseFileLimit() (soft, hard int64, err error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, err
	}
	if r.Cur < r.Max {
		want := r
		want.Cur = r.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
			r = want
		}
	}
	return clampRlim(r.Cur), clampRlim(r.Max), nil
}

func clampRlim(v uint64) int64 {
	if v > 1<<40 { // RLIM_INFINITY
		return 0
	}
	return int64(v)
}
