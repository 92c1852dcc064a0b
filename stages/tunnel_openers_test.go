package stages

import (
	"errors"
	"net"
	"sync"
	"testing"
	"testing/synctest"
)

// TestOpeners: opens that run at the same time each get an opener (none
// waits for another's dial), the openers left waiting are bounded, later
// opens reuse them, a panic is the open's error, and close ends them all.
func TestOpeners(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := newOpeners()
		const n = maxIdleOpeners + 8
		var all sync.WaitGroup
		all.Add(n)
		var ready sync.WaitGroup
		ready.Add(n)
		for range n {
			go func() {
				defer ready.Done()
				_, err := o.run(func() (net.Conn, error) {
					all.Done()
					all.Wait() // returns only once every open runs at once
					return nil, errors.New("refused")
				})
				if err == nil || err.Error() != "refused" {
					t.Errorf("open error %v", err)
				}
			}()
		}
		ready.Wait()
		synctest.Wait()
		if got := o.started.Load(); got != n {
			t.Errorf("%d openers for %d opens at once", got, n)
		}
		if got := o.idle.Load(); got != maxIdleOpeners {
			t.Errorf("%d openers wait, want %d", got, maxIdleOpeners)
		}
		for i := range 20 {
			_, err := o.run(func() (net.Conn, error) {
				if i == 3 {
					panic("in open")
				}
				return nil, nil
			})
			var p *PanicError
			if (i == 3) != errors.As(err, &p) {
				t.Fatalf("open %d: error %v", i, err)
			}
			synctest.Wait()
		}
		if got := o.started.Load(); got != n {
			t.Errorf("sequential opens started %d more openers", got-n)
		}
		o.close()
		if got := o.idle.Load(); got != 0 {
			t.Errorf("%d openers left after close", got)
		}
	})
}
