package v1

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

type multiTCPFile struct {
	Cases []struct {
		Number      int    `json:"number"`
		Blocksize   int    `json:"blocksize"`
		StreamLen   int    `json:"stream_len"`
		StreamRule  string `json:"stream_rule"`
		StreamSHA   string `json:"stream_sha256"`
		WriteSizes  []int  `json:"write_sizes"`
		Connections []struct {
			Conn   int        `json:"conn"`
			Len    int        `json:"len"`
			SHA    string     `json:"sha256"`
			Ranges [][2]int64 `json:"ranges"`
		} `json:"connections"`
		ReassembledSHA string `json:"reassembled_sha256"`
	} `json:"cases"`
}

func TestMultiTCPVectors(t *testing.T) {
	var f multiTCPFile
	loadJSON(t, "multi_tcp.json", &f)
	for _, c := range f.Cases {
		t.Run(fmt.Sprintf("%dx%d", c.Number, c.Blocksize), func(t *testing.T) {
			var seed int
			if _, err := fmt.Sscanf(c.StreamRule, "byte i = (%d + 7*i) mod 251", &seed); err != nil {
				t.Fatalf("stream rule %q: %v", c.StreamRule, err)
			}
			stream := ruleBytes(c.StreamLen, seed)
			if sha(stream) != c.StreamSHA {
				t.Fatal("stream sha mismatch")
			}
			// Sending: split each write, and record the ranges claimed.
			s, err := NewStriper(c.Number, c.Blocksize)
			if err != nil {
				t.Fatal(err)
			}
			lanes := make([][]byte, c.Number)
			ranges := make([][][2]int64, c.Number)
			rest := stream
			for _, w := range c.WriteSizes {
				p := rest[:w]
				rest = rest[w:]
				probe := *s
				for q := p; len(q) > 0; {
					start := probe.Offset()
					lane, take := probe.Next(len(q))
					if lane != Lane(start, c.Number, c.Blocksize) {
						t.Fatalf("Next lane %d, Lane %d", lane, Lane(start, c.Number, c.Blocksize))
					}
					r := ranges[lane]
					if n := len(r); n > 0 && r[n-1][1] == start {
						r[n-1][1] += int64(take)
					} else {
						r = append(r, [2]int64{start, start + int64(take)})
					}
					ranges[lane] = r
					q = q[take:]
				}
				lanes = s.Split(lanes, p)
				if s.Offset() != probe.Offset() {
					t.Fatal("Split and Next disagree")
				}
			}
			if len(rest) != 0 || s.Offset() != int64(c.StreamLen) {
				t.Fatalf("write sizes do not cover the stream")
			}
			for _, conn := range c.Connections {
				got := lanes[conn.Conn]
				if len(got) != conn.Len || sha(got) != conn.SHA {
					t.Errorf("lane %d: len %d sha %s, want %d %s", conn.Conn, len(got), sha(got), conn.Len, conn.SHA)
				}
				if !slices.Equal(ranges[conn.Conn], conn.Ranges) {
					t.Errorf("lane %d ranges %v, want %v", conn.Conn, ranges[conn.Conn], conn.Ranges)
				}
			}
			// Receiving: read lanes in the order Reassembler asks, in
			// reads of random sizes.
			rng := rand.New(rand.NewPCG(uint64(c.Number), uint64(c.Blocksize)))
			r, err := NewReassembler(c.Number, c.Blocksize)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			for {
				lane, n := r.Want()
				if len(lanes[lane]) == 0 {
					break // EOF on the lane whose turn it is ends the backend
				}
				n = min(n, len(lanes[lane]), 1+rng.IntN(3000))
				out = append(out, lanes[lane][:n]...)
				lanes[lane] = lanes[lane][n:]
				if err := r.Advance(n); err != nil {
					t.Fatal(err)
				}
			}
			if sha(out) != c.ReassembledSHA || !bytes.Equal(out, stream) || r.Offset() != int64(len(out)) {
				t.Fatalf("reassembled %d bytes, sha %s", len(out), sha(out))
			}
		})
	}
}

func TestStripeErrors(t *testing.T) {
	for _, nb := range [][2]int{{0, 1}, {1, 0}, {-1, 5}} {
		if _, err := NewStriper(nb[0], nb[1]); !errors.Is(err, ErrStripeConfig) {
			t.Errorf("NewStriper%v: %v", nb, err)
		}
		if _, err := NewReassembler(nb[0], nb[1]); !errors.Is(err, ErrStripeConfig) {
			t.Errorf("NewReassembler%v: %v", nb, err)
		}
	}
	r, _ := NewReassembler(2, 10)
	if err := r.Advance(11); !errors.Is(err, ErrStripeOverrun) {
		t.Errorf("overrun: %v", err)
	}
	if err := r.Advance(-1); !errors.Is(err, ErrStripeOverrun) {
		t.Errorf("negative: %v", err)
	}
	r.Advance(10)
	if lane, n := r.Want(); lane != 1 || n != 10 {
		t.Errorf("after one stripe: lane %d n %d", lane, n)
	}
	s, _ := NewStriper(3, 4)
	if lane, take := s.Next(0); lane != 0 || take != 0 || s.Offset() != 0 {
		t.Error("Next(0) claimed bytes")
	}
	if Lane(1<<40, DefaultLanes, DefaultStripeSize) != int((1<<40)/8192%5) {
		t.Error("Lane with a large offset")
	}
}
