package runner

import (
	"net"
	"strconv"
)

// Addresses from the config sections, as host:port.

// ListenAddr is where the server listens for backends.
func (s *ServerConfig) ListenAddr() string {
	return net.JoinHostPort(s.Backend.Address, strconv.Itoa(s.Backend.Port))
}

// ServerAddr is where the client connects.
func (c *ClientConfig) ServerAddr() string {
	return net.JoinHostPort(c.Backend.Server, strconv.Itoa(c.Backend.Port))
}

// ListenAddr is where the client listens for apps.
func (c *ClientConfig) ListenAddr() string {
	return net.JoinHostPort(c.Address, strconv.Itoa(c.Port))
}

// TargetAddr is the redirect frontend's target.
func (s *ServerConfig) TargetAddr() string {
	return net.JoinHostPort(s.Frontend.Server, strconv.Itoa(s.Frontend.Port))
}
