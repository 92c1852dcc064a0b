package runner

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
)

// CheckReport is what `usocks check` finds in a config file.
type CheckReport struct {
	// Sections has one line per section found: what it would run.
	Sections []string
	// Warnings are things that work but should not be left so.
	Warnings []string
	// Problems are what would stop start-up, every one with its key.
	Problems ConfigErrors
}

// CheckConfig reads a config file and checks every section in it as
// start-up would (keys, types, values, key files, certificates, access
// rules) without binding or dialling anything. The error is for a file
// that cannot be read or parsed as YAML at all.
func CheckConfig(path string) (*CheckReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, p, err := parseConfig(b)
	if err != nil {
		return nil, err
	}
	r := &CheckReport{Problems: p.list, Warnings: FileWarnings(path, c)}
	if c.Client == nil && c.Server == nil {
		r.Problems = append(r.Problems, &ConfigError{"client", "no client: or server: section"})
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	if c.Client != nil {
		err := c.Client.Validate()
		if err == nil {
			_, err = NewClient(c.Client, quiet)
		} else {
			r.checkKey(&c.Client.Common, "client")
		}
		if err == nil {
			r.Sections = append(r.Sections, fmt.Sprintf("client: %s %s to %s, apps on %s",
				c.Client.Protocol, c.Client.Backend.Type, newServerPicker(c.Client.backendServers()), c.Client.ListenAddr()))
		}
		r.add("client", err)
	}
	if c.Server != nil {
		err := c.Server.Validate()
		var srv *Server
		if err == nil {
			srv, err = NewServer(c.Server, quiet)
		} else {
			r.checkKey(&c.Server.Common, "server")
		}
		if err == nil {
			line := fmt.Sprintf("server: %s %s on %s, frontend %s",
				c.Server.Protocol, c.Server.Backend.Type, c.Server.ListenAddr(), c.Server.Frontend.Type)
			if srv.cert != nil {
				line += ", tls_pin " + srv.cert.pin() // for clients' backend.tls_pin
			}
			r.Sections = append(r.Sections, line)
		}
		r.add("server", err)
	}
	return r, nil
}

// add records err's problems, naming section for one that has no key.
func (r *CheckReport) add(section string, err error) {
	var ces ConfigErrors
	var ce *ConfigError
	switch {
	case err == nil:
	case errors.As(err, &ces):
		r.Problems = append(r.Problems, ces...)
	case errors.As(err, &ce):
		r.Problems = append(r.Problems, ce)
	default:
		r.Problems = append(r.Problems, &ConfigError{section, err.Error()})
	}
}

// checkKey reports a bad v2 key of a section that failed validation (a
// valid section has its key checked when it is set up).
func (r *CheckReport) checkKey(c *Common, section string) {
	if c.Key != "" && c.Protocol == "v2" {
		_, err := c.PSK(section)
		r.add(section, err)
	}
}
