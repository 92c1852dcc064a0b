package capture

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Reader reads a capture file event by event.
type Reader struct {
	br     *bufio.Reader
	line   int
	Header Header
}

// LineError is a bad line: the reader skips it and can go on.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// errTruncatedLine marks a last line without its newline.
var errTruncatedLine = errors.New("last line is incomplete (no end of line): the file was cut short")

// NewReader reads and checks the header.
func NewReader(r io.Reader) (*Reader, error) {
	cr := &Reader{br: bufio.NewReaderSize(r, 64<<10)}
	line, err := cr.readLine()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file is empty", ErrNotCapture)
		}
		if errors.Is(err, errTruncatedLine) || errors.Is(err, bufio.ErrTooLong) {
			if !strings.HasPrefix(string(line), Magic+" ") {
				return nil, fmt.Errorf("%w (its first line does not start with %q)", ErrNotCapture, Magic+" ")
			}
		} else {
			return nil, err
		}
	}
	h, herr := ParseHeader(string(line))
	if herr != nil {
		return nil, herr
	}
	if err != nil {
		return nil, fmt.Errorf("capture header: %w", err)
	}
	cr.Header = h
	return cr, nil
}

// readLine returns the next line without its newline. At the end of the
// file it returns io.EOF; a last line without newline comes with
// errTruncatedLine; a line over MaxLine with bufio.ErrTooLong.
func (r *Reader) readLine() ([]byte, error) {
	var buf []byte
	for {
		frag, err := r.br.ReadSlice('\n')
		if len(buf)+len(frag) > MaxLine {
			// Skip the rest of this line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.br.ReadSlice('\n')
			}
			r.line++
			return nil, bufio.ErrTooLong
		}
		buf = append(buf, frag...)
		switch {
		case err == nil:
			r.line++
			return bytes.TrimSuffix(buf[:len(buf)-1], []byte{'\r'}), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(buf) == 0 {
				return nil, io.EOF
			}
			r.line++
			return buf, errTruncatedLine
		default:
			return nil, err
		}
	}
}

// Line is the number of the line last read (the header is line 1).
func (r *Reader) Line() int { return r.line }

// Next returns the next event. It returns io.EOF at the end, a *LineError
// for a line it cannot use (call Next again to go on), or another error
// when the file cannot be read any further.
func (r *Reader) Next() (Event, error) {
	for {
		line, err := r.readLine()
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return Event{}, io.EOF
			case errors.Is(err, bufio.ErrTooLong):
				return Event{}, &LineError{r.line, fmt.Errorf("line longer than %d bytes", MaxLine)}
			case errors.Is(err, errTruncatedLine):
				e, perr := ParseEvent(string(line))
				if perr != nil {
					return Event{}, &LineError{r.line, err}
				}
				return e, nil // a whole event that merely lacks its newline
			}
			return Event{}, err
		}
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		e, perr := ParseEvent(string(line))
		if perr != nil {
			return e, &LineError{r.line, perr}
		}
		return e, nil
	}
}
