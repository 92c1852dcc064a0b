//go:build !linux

package stages

import "net"

// rawSock is Linux only (rawsock_linux.go); elsewhere sockets keep the
// ordinary path.
type rawSock struct{}

func newRawSock(any) *rawSock { return nil }

func (*rawSock) Read([]byte) (int, error) { return 0, net.ErrClosed }

func (*rawSock) writev(*net.Buffers) (int64, error) { return 0, net.ErrClosed }

func (*rawSock) readBuf(int) (*payloadBuf, int, error) { return nil, 0, net.ErrClosed }

func (*rawSock) closeWrite() error { return net.ErrClosed }
