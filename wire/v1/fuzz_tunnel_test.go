package v1

import (
	"bytes"
	"testing"
)

// refEndpoint transliterates the original's TunnelConnection receive
// logic (dict of states, KeyError for unknown ids) as an oracle. Its
// only adjustment is the documented one: flags with only reserved bits
// are not delivered.
type refEndpoint struct{ states map[uint16]State }

func (r *refEndpoint) receive(m Message) (deliver, reply Message, unknown bool) {
	id, control := m.ID, m.Flags
	st, ok := r.states[id]
	if control&RST != 0 {
		if !ok {
			return Message{}, Message{}, true
		}
		if st == StateConnected {
			reply = Message{Flags: RST, ID: id}
			deliver = Message{Flags: RST, ID: id}
		}
		r.states[id] = StateClosed
		return deliver, reply, false
	}
	if control&SYN != 0 {
		r.states[id], st, ok = StateConnected, StateConnected, true
	}
	if !ok {
		return Message{}, Message{}, true
	}
	if st != StateConnected {
		control &^= DAT
	}
	var data []byte
	if control&DAT != 0 {
		data = m.Payload
	}
	if control&FIN != 0 {
		r.states[id] = StateClosed
		if st != StateConnected {
			return Message{}, Message{}, false
		}
		reply = Message{Flags: FIN, ID: id}
	}
	if control&FlagsMask == 0 {
		return Message{}, reply, false
	}
	return Message{Flags: control, ID: id, Payload: data}, reply, false
}

func sameMessage(a, b Message) bool {
	return a.Flags == b.Flags && a.ID == b.ID && bytes.Equal(a.Payload, b.Payload)
}

// FuzzEndpoint drives an Endpoint with random local operations and
// incoming messages on a few ids, compares every receive with the
// reference, and checks the state machine's invariants.
func FuzzEndpoint(f *testing.F) {
	f.Add([]byte{1, 1, 0, 2, 1, 0, 0, 1, 4, 0, 1, 8})
	f.Add([]byte{0, 7, 3, 0, 7, 2, 0, 7, 4, 0, 7, 4, 0, 7, 8})
	f.Add([]byte{5, 2, 0, 3, 2, 0, 0, 2, 6, 4, 2, 0, 0, 2, 0x1a, 0, 2, 0x10})
	for _, c := range tunnelCodecTable {
		b := unhex(f, c.hex)
		f.Add([]byte{0, b[3], b[1], 1, b[3], 0, 0, b[3], b[1]})
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		var e Endpoint
		ref := refEndpoint{states: map[uint16]State{}}
		payload := []byte("data")
		for len(ops) >= 3 {
			op, id, arg := ops[0]%6, uint16(ops[1]%4), ops[2]
			ops = ops[3:]
			before := e.State(id)
			var sent Message
			var err error
			switch op {
			case 0:
				m := Message{Flags: Flags(arg), ID: id, Payload: payload[:arg%5]}
				dRef, rRef, unknown := ref.receive(m)
				res, err := e.Receive(m)
				if unknown != (err == ErrUnknownID) || (err != nil && err != ErrUnknownID) {
					t.Fatalf("receive %v on %v: err %v, reference unknown=%v", m.Flags, before, err, unknown)
				}
				if !sameMessage(res.Deliver, dRef) || !sameMessage(res.Reply, rRef) {
					t.Fatalf("receive %v on %v: %+v, reference %+v %+v", m.Flags, before, res, dRef, rRef)
				}
				if res.Reply.Flags != 0 && res.Reply.Flags != FIN && res.Reply.Flags != RST {
					t.Fatalf("reply %v", res.Reply.Flags)
				}
				// Released means the id ended closed; it is certain when
				// an open id got closed (a closed id may also be reopened
				// by SYN and closed again by the same message).
				after := e.State(id)
				if (res.Released && after != StateClosed) ||
					(!res.Released && before.active() && after == StateClosed) {
					t.Fatalf("released %v: %v -> %v", res.Released, before, after)
				}
				if err != nil && e.State(id) != before {
					t.Fatal("state changed on error")
				}
			case 1:
				err = e.Open(id)
			case 2:
				sent, err = e.SendData(id, payload[:arg%3])
			case 3:
				sent, err = e.SendFIN(id)
			case 4:
				sent, err = e.SendRST(id)
			case 5:
				sent, err = e.SendSYN(id)
			}
			if op != 0 {
				if err == nil && e.State(id) != StateUnknown {
					ref.states[id] = e.State(id)
				}
				if err != nil && e.State(id) != before {
					t.Fatalf("op %d changed state on error %v", op, err)
				}
				if sent.Flags != 0 && before != StateNew && before != StateConnected {
					t.Fatalf("op %d sent %v from state %v", op, sent.Flags, before)
				}
			}
			if got := e.State(id); got != ref.states[id] {
				t.Fatalf("state %v, reference %v", got, ref.states[id])
			}
		}
	})
}

// FuzzIDAllocator checks that ids are never handed out twice and that
// the counter and the free set always partition [1, NextID).
func FuzzIDAllocator(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 1, 2, 0, 1, 4, 1, 3, 0, 0, 1, 1, 1, 2, 1, 3, 0})
	f.Add([]byte{0, 0, 0, 1, 3, 1, 2, 1, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var a IDAllocator
		held := map[uint16]bool{}
		for len(ops) >= 2 {
			op, arg := ops[0]%2, uint16(ops[1]%40)
			ops = ops[2:]
			if op == 0 {
				id, err := a.Allocate()
				if err != nil || held[id] || id < FirstID || id > LastID {
					t.Fatalf("allocate %d %v (held %v)", id, err, held[id])
				}
				held[id] = true
			} else {
				err := a.Recycle(arg)
				if (err == nil) != held[arg] {
					t.Fatalf("recycle %d: %v, held %v", arg, err, held[arg])
				}
				delete(held, arg)
			}
			free := a.Recycled()
			for _, id := range free {
				if held[id] {
					t.Fatalf("id %d both held and free", id)
				}
			}
			if len(free)+len(held) != a.NextID()-FirstID {
				t.Fatalf("next %d, %d free, %d held", a.NextID(), len(free), len(held))
			}
		}
	})
}

// FuzzStripe splits a stream over lanes in random writes and rebuilds
// it with the Reassembler in random reads.
func FuzzStripe(f *testing.F) {
	f.Add(uint8(5), uint16(8192), []byte{16, 48, 64, 16, 255})
	f.Add(uint8(3), uint16(7), []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, number uint8, blocksize uint16, sizes []byte) {
		n, bs := int(number%8)+1, int(blocksize%64)+1
		s, err := NewStriper(n, bs)
		if err != nil {
			t.Fatal(err)
		}
		var stream []byte
		lanes := make([][]byte, n)
		for _, w := range sizes {
			p := ruleBytes(int(w), len(stream))
			stream = append(stream, p...)
			lanes = s.Split(lanes, p)
		}
		r, _ := NewReassembler(n, bs)
		var out []byte
		for i := 0; ; i++ {
			lane, want := r.Want()
			if len(lanes[lane]) == 0 {
				break
			}
			k := min(want, len(lanes[lane]), 1+int(sizes[i%len(sizes)]))
			out = append(out, lanes[lane][:k]...)
			lanes[lane] = lanes[lane][k:]
			if err := r.Advance(k); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(out, stream) {
			t.Fatalf("reassembled %d of %d bytes", len(out), len(stream))
		}
	})
}
