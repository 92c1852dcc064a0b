package stages

import "context"

// recv takes the next value from ch, as every single-input stage loop
// does: ok is false once ch is closed; err is ctx's error if ctx ends
// first.
func recv[T any](ctx context.Context, ch <-chan T) (v T, ok bool, err error) {
	select {
	case v, ok = <-ch:
		return v, ok, nil
	case <-ctx.Done():
		return v, false, ctx.Err()
	}
}
