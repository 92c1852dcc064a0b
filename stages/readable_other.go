//go:build !linux

package stages

import "net"

// waitReadable is a no-op off Linux: the caller reads with a buffer.
func waitReadable(c net.Conn) bool { return false }
