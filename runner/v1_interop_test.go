package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"testing"
	"time"

	v1 "usocks/wire/v1"
)

// TestV1ServerAgainstOriginalClient plays the original 2011 client's bytes
// from testdata/usocks-v1/session.json to our v1 server, phase by phase,
// and checks that our server answers with the same tunnel messages the
// original server sent (same ids, flags, lengths and data), decoded with
// the v1 codec. The target behaves as in the recorded session: the first
// stream's target answers 43 bytes and closes, the second echoes, the
// third is refused.
func TestV1ServerAgainstOriginalClient(t *testing.T) {
	var vec struct {
		Key            string `json:"key"`
		ClientToServer struct {
			Packets []struct {
				StreamOffset int    `json:"stream_offset"`
				Ciphertext   string `json:"ciphertext_hex"`
			} `json:"packets"`
			StreamHex string `json:"stream_hex"`
		} `json:"client_to_server"`
		ServerToClient struct {
			StreamHex string `json:"stream_hex"`
			Packets   []struct {
				TypeName string `json:"type_name"`
				Tunnel   *struct {
					Flags     int    `json:"flags"`
					ConnID    int    `json:"conn_id"`
					PacketHex string `json:"packet_hex"`
				} `json:"tunnel"`
			} `json:"packets"`
		} `json:"server_to_client"`
	}
	raw, err := os.ReadFile("../testdata/usocks-v1/session.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &vec); err != nil {
		t.Fatal(err)
	}
	stream, _ := hex.DecodeString(vec.ClientToServer.StreamHex)
	answer, _ := hex.DecodeString(vec.ServerToClient.Packets[0].Tunnel.PacketHex)
	answer = answer[4:] // the 43 bytes the first target sent

	// The target: the stream that asks "GET / ..." gets the recorded 43-byte
	// answer and a close, the other is echoed; then the listener goes away
	// so the third stream is refused. (Our server dials both at once, so
	// the target tells them apart by content, not by order.)
	tl := listenLocal(t)
	targetDone := make(chan struct{})
	go func() {
		defer close(targetDone)
		var conns []net.Conn
		for len(conns) < 2 {
			a, err := tl.Accept()
			if err != nil {
				break
			}
			conns = append(conns, a)
		}
		_ = tl.Close()
		done := make(chan struct{}, len(conns))
		for _, a := range conns {
			go func() {
				defer func() { _ = a.Close(); done <- struct{}{} }()
				head := make([]byte, 3)
				if _, err := io.ReadFull(a, head); err != nil {
					return
				}
				if string(head) == "GET" {
					_, _ = io.ReadFull(a, make([]byte, 35))
					_, _ = a.Write(answer)
					return
				}
				_, _ = a.Write(head)
				_, _ = io.Copy(a, a)
			}()
		}
		for range conns {
			<-done
		}
	}()
	tn := startTunnel(t, tunnelOpts{targetPort: tl.Addr().(*net.TCPAddr).Port, protocol: "v1", noClient: true, key: vec.Key})

	c, err := net.Dial("tcp", tn.serverAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	op := v1.NewOpener(v1.DeriveKey(vec.Key))
	// Message boundaries are not meaningful (a TCP stream may be read in
	// other chunks than the original's 4096 bytes), so each side is
	// summarised per stream id: the SYN/FIN/RST flags in order and the
	// SHA-256 of the concatenated data.
	type streamSum struct {
		flags []string
		data  []byte
	}
	summary := func(msgs []v1.Message) string {
		per := map[uint16]*streamSum{}
		var ids []int
		for _, m := range msgs {
			ss := per[m.ID]
			if ss == nil {
				ss = &streamSum{}
				per[m.ID] = ss
				ids = append(ids, int(m.ID))
			}
			if f := m.Flags &^ v1.DAT; f != 0 {
				ss.flags = append(ss.flags, f.String())
			}
			ss.data = append(ss.data, m.Payload...)
		}
		sort.Ints(ids)
		out := ""
		for _, id := range ids {
			ss := per[uint16(id)]
			sum := sha256.Sum256(ss.data)
			out += fmt.Sprintf("[id=%d %v len=%d %x] ", id, ss.flags, len(ss.data), sum[:4])
		}
		return out
	}
	// What the original server sent, decoded from its recorded stream.
	var original []v1.Message
	{
		sb, _ := hex.DecodeString(vec.ServerToClient.StreamHex)
		o := v1.NewOpener(v1.DeriveKey(vec.Key))
		o.Feed(sb)
		for {
			ev, err := o.Next()
			if err != nil {
				break
			}
			if ev.Kind == v1.EventMessage {
				m, err := v1.ParseMessage(ev.Payload)
				if err != nil {
					t.Fatal(err)
				}
				m.Payload = append([]byte(nil), m.Payload...)
				original = append(original, m)
			}
		}
	}
	if len(original) != 6 {
		t.Fatalf("decoded %d messages from the recorded server stream, want 6", len(original))
	}
	want := func(idx ...int) string {
		var msgs []v1.Message
		for _, i := range idx {
			msgs = append(msgs, original[i])
		}
		return summary(msgs)
	}
	// got reads our server's messages until their summary is w (or times out).
	got := func(w string) string {
		t.Helper()
		var msgs []v1.Message
		buf := make([]byte, 8192)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for summary(msgs) != w {
			ev, err := op.Next()
			if errors.Is(err, v1.ErrNeedMore) {
				k, rerr := c.Read(buf)
				if rerr != nil {
					return summary(msgs) + " then " + rerr.Error()
				}
				op.Feed(buf[:k])
				continue
			}
			if err != nil {
				t.Fatalf("decoding our server: %v", err)
			}
			if ev.Kind != v1.EventMessage {
				continue
			}
			m, err := v1.ParseMessage(ev.Payload)
			if err != nil {
				t.Fatal(err)
			}
			m.Payload = append([]byte(nil), m.Payload...)
			msgs = append(msgs, m)
		}
		return summary(msgs)
	}
	send := func(from, to int) { // client packets [from, to)
		t.Helper()
		start := vec.ClientToServer.Packets[from].StreamOffset
		if from == 0 {
			start = 0 // with the sync block
		}
		end := len(stream)
		if to < len(vec.ClientToServer.Packets) {
			end = vec.ClientToServer.Packets[to].StreamOffset
		}
		if _, err := c.Write(stream[start:end]); err != nil {
			t.Fatal(err)
		}
	}
	check := func(phase string, w string) {
		t.Helper()
		if g := got(w); g != w {
			t.Fatalf("%s: our server sent %s\nthe original sent %s", phase, g, w)
		}
	}
	send(0, 3) // SYN|DAT id 1, SYN|DAT id 2, DAT id 2
	check("data", want(0, 1, 2, 3))
	send(3, 5) // FIN reply id 1, FIN id 2
	check("fin", want(4))
	send(5, 6) // SYN|DAT id 1 again: the target now refuses
	check("refused", want(5))
	send(6, 8) // RST reply id 1, close record
	_ = c.(*net.TCPConn).CloseWrite()
	<-targetDone
	// Our server answers the close with its own and ends the session cleanly.
	waitFor(t, "a clean end of the session", 10*time.Second, func() bool { return tn.srv.Clean.Load() == 1 })
	if tn.srv.Failed.Load() != 0 {
		t.Fatal("session failed")
	}
}
