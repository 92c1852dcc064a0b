package frontend

import (
	"bytes"
	"strings"
)

// Parsing of HTTP/1.1 request heads for the HTTP proxy frontend.

// parseHTTPHead parses the request head at the start of b and returns it
// with the head's length in bytes; what follows in b is the body (or data
// for the CONNECT tunnel). It returns errHeadIncomplete while the head
// has not ended and nothing seen so far is malformed, and an *httpError
// for a malformed head. Lines may end in CRLF or LF; empty lines before
// the request line are skipped, up to a few (RFC 9112 section 2.2).
func parseHTTPHead(b []byte) (*httpRequest, int, error) {
	i := 0
	for empty := 0; ; empty++ {
		if empty > maxLeadingEmptyLines {
			return nil, 0, httpErr(400, "too many empty lines before the request")
		}
		if bytes.HasPrefix(b[i:], []byte("\r\n")) {
			i += 2
		} else if i < len(b) && b[i] == '\n' {
			i++
		} else {
			break
		}
	}
	var req *httpRequest
	for {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			if err := checkPartialLine(b[i:]); err != nil {
				return nil, 0, err
			}
			return nil, 0, errHeadIncomplete
		}
		line := b[i : i+j]
		i += j + 1
		line = bytes.TrimSuffix(line, []byte("\r"))
		if req == nil {
			r, err := parseRequestLine(line)
			if err != nil {
				return nil, 0, err
			}
			req = r
			continue
		}
		if len(line) == 0 {
			return req, i, nil
		}
		if len(req.Header) >= maxHTTPHeaders {
			return nil, 0, httpErr(431, "more than %d header lines", maxHTTPHeaders)
		}
		h, err := parseHeaderLine(line)
		if err != nil {
			return nil, 0, err
		}
		req.Header = append(req.Header, h)
	}
}

// checkPartialLine rejects an unfinished line that can never become valid
// (binary input, such as a TLS ClientHello sent to the proxy port).
func checkPartialLine(b []byte) error {
	for k, c := range b {
		if c == '\r' && k == len(b)-1 {
			continue
		}
		if c < 0x20 && c != '\t' || c == 0x7f {
			return httpErr(400, "control character 0x%02x in request head", c)
		}
	}
	return nil
}

func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isTchar(c) {
			return false
		}
	}
	return true
}

func parseRequestLine(line []byte) (*httpRequest, error) {
	parts := bytes.Split(line, []byte(" "))
	if len(parts) != 3 {
		return nil, httpErr(400, "malformed request line")
	}
	method, target, proto := parts[0], parts[1], parts[2]
	if !isToken(method) {
		return nil, httpErr(400, "malformed method")
	}
	if len(target) == 0 {
		return nil, httpErr(400, "empty request target")
	}
	for _, c := range target {
		if c <= 0x20 || c >= 0x7f {
			return nil, httpErr(400, "invalid character in request target")
		}
	}
	switch string(proto) {
	case "HTTP/1.1", "HTTP/1.0":
	default:
		if len(proto) == 8 && bytes.HasPrefix(proto, []byte("HTTP/")) && isDigit(proto[5]) && proto[6] == '.' && isDigit(proto[7]) {
			return nil, httpErr(505, "version %s not supported", proto)
		}
		return nil, httpErr(400, "malformed HTTP version")
	}
	return &httpRequest{Method: string(method), Target: string(target), Proto: string(proto)}, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func parseHeaderLine(line []byte) (httpHeader, error) {
	if line[0] == ' ' || line[0] == '\t' {
		return httpHeader{}, httpErr(400, "obsolete line folding")
	}
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return httpHeader{}, httpErr(400, "header line without colon")
	}
	name := line[:colon]
	if !isToken(name) {
		return httpHeader{}, httpErr(400, "malformed header name")
	}
	value := bytes.Trim(line[colon+1:], " \t")
	for _, c := range value {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return httpHeader{}, httpErr(400, "control character in header %s", name)
		}
	}
	return httpHeader{Name: string(name), Value: string(value)}, nil
}

// parseAuthority splits host[:port] or [v6][:port]; defPort 0 makes the
// port required. The host must be a valid name or IP literal.
func parseAuthority(a string, defPort uint16) (string, uint16, error) {
	var host, port string
	hasPort := false
	if strings.HasPrefix(a, "[") {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return "", 0, httpErr(400, "malformed IPv6 literal")
		}
		host = a[1:end]
		rest := a[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, httpErr(400, "malformed authority")
			}
			port, hasPort = rest[1:], true
		}
		if !strings.Contains(host, ":") {
			return "", 0, httpErr(400, "malformed IPv6 literal")
		}
	} else {
		host = a
		if i := strings.LastIndexByte(a, ':'); i >= 0 {
			host, port, hasPort = a[:i], a[i+1:], true
		}
	}
	if !validHost(host) {
		return "", 0, httpErr(400, "invalid host %q", host)
	}
	if !hasPort || port == "" {
		if defPort == 0 {
			return "", 0, httpErr(400, "port missing")
		}
		return host, defPort, nil
	}
	n, ok := atoiDigits(port)
	if !ok || n < 1 || n > 65535 {
		return "", 0, httpErr(400, "invalid port %q", port)
	}
	return host, uint16(n), nil
}
