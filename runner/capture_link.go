package runner

import "errors"

// errResumeEnded ends the capture of a resuming connection whose session
// ended before the connection could take over.
var errResumeEnded = errors.New("the session ended before this resumption took over")

// runCapturedLink runs one link of s. Every link after the first is
// captured on its own connection's capture session (SPEC-v2.md §7b): a
// link event names the session's first connection and the link number,
// and the link's end is recorded when it ends (the first connection's end
// is the session's, recorded by end).
func (s *session) runCapturedLink(lk, first *link) error {
	s.links++
	if lk == first || lk.capture == nil {
		return s.runLink(lk)
	}
	lk.capture.Link(s.p.capture, s.links)
	err := s.runLink(lk)
	lk.capture.End(err)
	return err
}
