package runner

import "time"

// ResumeConfig is how sessions survive a lost backend (v2, SPEC-v2.md
// §7b). Keys of both sections; 0 takes the default.
type ResumeConfig struct {
	// ResumeTimeout is how long a session outlives its backend: the
	// server keeps a detached session this long for its client, the
	// client keeps trying to resume for this long (default 60s; -1s
	// turns resumption off, and every backend loss resets the streams).
	ResumeTimeout time.Duration `yaml:"resume_timeout"`
	// ResumeBuffer bounds, in KiB, the frames a session keeps until the
	// peer acknowledges them (default 4096: 4 MiB per session). When it
	// is full, the streams wait (back-pressure); nothing is dropped.
	ResumeBuffer int `yaml:"resume_buffer"`
}

// Resume defaults.
const (
	DefaultResumeTimeout   = 60 * time.Second
	DefaultResumeBufferKiB = 4096
	// DefaultMaxDetached bounds the sessions a server keeps without a
	// backend (max_detached).
	DefaultMaxDetached = 1024
)

// validate fills defaults and records problems.
func (r *ResumeConfig) validate(p *problems) {
	if r.ResumeTimeout == 0 {
		r.ResumeTimeout = DefaultResumeTimeout
	}
	if r.ResumeTimeout > time.Hour {
		p.bad("resume_timeout", "must be at most 1h (-1s: off)")
	}
	if r.ResumeBuffer == 0 {
		r.ResumeBuffer = DefaultResumeBufferKiB
	}
	if r.ResumeBuffer < 64 || r.ResumeBuffer > 1<<20 {
		p.bad("resume_buffer", "must be 64..1048576 KiB")
	}
}

// resumes says whether sessions are resumable.
func (r *ResumeConfig) resumes() bool { return r.ResumeTimeout > 0 }
