package v1

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
)

type sessionDirection struct {
	IVHex         string         `json:"iv_hex"`
	SyncPlainHex  string         `json:"sync_plaintext_hex"`
	SyncCipherHex string         `json:"sync_ciphertext_hex"`
	Packets       []recordPacket `json:"packets"`
	StreamHex     string         `json:"stream_hex"`
	StreamSHA     string         `json:"stream_sha256"`
	PeerReturned  []struct {
		ConnID  int    `json:"conn_id"`
		Flags   int    `json:"flags"`
		DataLen int    `json:"data_len"`
		DataSHA string `json:"data_sha256"`
	} `json:"peer_tunnel_layer_returned"`
}

type sessionFile struct {
	Key       string           `json:"key"`
	AESKeyHex string           `json:"aes_key_hex"`
	C2S       sessionDirection `json:"client_to_server"`
	S2C       sessionDirection `json:"server_to_client"`
	ServerEnd string           `json:"server_end_of_stream"`
}

// peer is one side of a simulated session: its sealer, the opener of
// the stream it receives, its tunnel endpoint and what it delivered.
type peer struct {
	t         *testing.T
	name      string
	sealer    *Sealer
	out       []byte // everything this side sent
	opener    *Opener
	endpoint  Endpoint
	alloc     *IDAllocator // client only
	delivered []string
	other     *peer
}

func (p *peer) send(m Message) {
	ct := p.sealer.AppendMessage(nil, AppendMessage(nil, m))
	p.out = append(p.out, ct...)
	p.other.opener.Feed(ct)
}

func (p *peer) sendData(id uint16, data []byte) {
	m, err := p.endpoint.SendData(id, data)
	if err != nil {
		p.t.Fatalf("%s: SendData(%d): %v", p.name, id, err)
	}
	p.send(m)
}

// process reads every message that has arrived and applies it, sending
// the automatic replies.
func (p *peer) process() {
	for {
		ev, err := p.opener.Next()
		if errors.Is(err, ErrNeedMore) {
			return
		}
		if err != nil {
			p.t.Fatalf("%s: %v", p.name, err)
		}
		if ev.Kind != EventMessage {
			continue
		}
		m, err := ParseMessage(ev.Payload)
		if err != nil {
			p.t.Fatalf("%s: %v", p.name, err)
		}
		r, err := p.endpoint.Receive(m)
		if err != nil {
			p.t.Fatalf("%s: %v", p.name, err)
		}
		if r.Deliver.Flags != 0 {
			d := r.Deliver
			p.delivered = append(p.delivered, fmt.Sprintf("%d/%d/%d/%s", d.ID, d.Flags, len(d.Payload), sha(d.Payload)))
		}
		if r.Reply.Flags != 0 {
			p.send(r.Reply)
		}
		if r.Released && p.alloc != nil {
			if err := p.alloc.Recycle(m.ID); err != nil {
				p.t.Fatalf("%s: recycle %d: %v", p.name, m.ID, err)
			}
		}
	}
}

func expectedReturned(d sessionDirection) []string {
	var out []string
	for _, r := range d.PeerReturned {
		out = append(out, fmt.Sprintf("%d/%d/%d/%s", r.ConnID, r.Flags, r.DataLen, r.DataSHA))
	}
	return out
}

// TestSessionSimulation replays session.json's timeline with two
// Endpoints, two Sealers and two Openers wired together, and checks both
// byte streams and what each tunnel layer handed to its application.
func TestSessionSimulation(t *testing.T) {
	var f sessionFile
	loadJSON(t, "session.json", &f)
	key := DeriveKey(f.Key)
	var alloc IDAllocator
	client := &peer{t: t, name: "client", opener: NewOpener(key), alloc: &alloc,
		sealer: NewSealer(key, unhex16(t, f.C2S.IVHex), unhex16(t, f.C2S.SyncPlainHex))}
	server := &peer{t: t, name: "server", opener: NewOpener(key),
		sealer: NewSealer(key, unhex16(t, f.S2C.IVHex), unhex16(t, f.S2C.SyncPlainHex))}
	client.other, server.other = server, client
	for _, p := range []*peer{client, server} {
		p.out = p.sealer.Sync()
		p.other.opener.Feed(p.out)
	}
	payload := func(d sessionDirection, i int) []byte {
		return unhex(t, *d.Packets[i].Tunnel.PacketHex)[TunnelHeaderLen:]
	}
	bData := ruleBytes(5000, 77)
	alloc1 := func() uint16 {
		id, err := alloc.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		if err := client.endpoint.Open(id); err != nil {
			t.Fatal(err)
		}
		return id
	}

	a, b := alloc1(), alloc1() // app connections A and B: nothing sent
	if a != 1 || b != 2 {
		t.Fatalf("ids %d %d", a, b)
	}
	client.sendData(a, payload(f.C2S, 0))
	client.sendData(b, bData[:4096])
	client.sendData(b, bData[4096:])
	server.process()
	server.sendData(a, payload(f.S2C, 0))
	if m, _ := server.endpoint.SendFIN(a); m.Flags == FIN {
		server.send(m)
	} else {
		t.Fatal("server FIN not sent")
	}
	server.sendData(b, bData[:4096])
	server.sendData(b, bData[4096:])
	client.process() // replies FIN for id 1
	if m, _ := client.endpoint.SendFIN(b); m.Flags == FIN {
		client.send(m)
	} else {
		t.Fatal("client FIN not sent")
	}
	server.process() // swallows FIN 1, replies FIN 2
	client.process() // swallows FIN 2
	c := alloc1()
	if c != 1 {
		t.Fatalf("connection C got id %d, want recycled 1", c)
	}
	client.sendData(c, payload(f.C2S, 5))
	server.process()
	if m, _ := server.endpoint.SendRST(c); m.Flags == RST {
		server.send(m) // target refused
	} else {
		t.Fatal("server RST not sent")
	}
	client.process() // replies RST
	server.process() // swallows it
	client.out = client.sealer.AppendClose(client.out, unhex4(t, f.C2S.Packets[len(f.C2S.Packets)-1].PaddingHex))
	server.opener.Feed(client.out[len(client.out)-BlockSize:])
	server.process()

	for _, x := range []struct {
		p *peer
		d sessionDirection
	}{{client, f.C2S}, {server, f.S2C}} {
		if !bytes.Equal(x.p.out, unhex(t, x.d.StreamHex)) || sha(x.p.out) != x.d.StreamSHA {
			t.Errorf("%s stream differs from the vector", x.p.name)
		}
		if want := expectedReturned(x.d); !slices.Equal(x.p.other.delivered, want) {
			t.Errorf("%s delivered\n %v\nwant\n %v", x.p.other.name, x.p.other.delivered, want)
		}
	}
	checkErrClass(t, server.opener.EOF(), f.ServerEnd)
	checkErrClass(t, client.opener.EOF(), "InsecureClosingError")
	for id := uint16(1); id <= 2; id++ {
		if client.endpoint.State(id) != StateClosed || server.endpoint.State(id) != StateClosed {
			t.Errorf("id %d: client %v server %v", id, client.endpoint.State(id), server.endpoint.State(id))
		}
	}
}

// TestSessionStreams decodes both session streams in several chunkings
// and checks every tunnel message against the vector's packets.
func TestSessionStreams(t *testing.T) {
	var f sessionFile
	loadJSON(t, "session.json", &f)
	key := DeriveKey(f.Key)
	for name, d := range map[string]sessionDirection{"c2s": f.C2S, "s2c": f.S2C} {
		stream := unhex(t, d.StreamHex)
		if !bytes.Equal(stream, recordStream(t, d.SyncCipherHex, d.Packets)) {
			t.Fatalf("%s: stream_hex differs from the packets", name)
		}
		var want []string
		secure := false
		for _, p := range d.Packets {
			if p.Tunnel != nil {
				want = append(want, p.Tunnel.PacketSHA)
				if p.Tunnel.PacketHex != nil && sha(unhex(t, *p.Tunnel.PacketHex)) != p.Tunnel.PacketSHA {
					t.Fatalf("%s: packet_hex does not match its sha", name)
				}
			}
			secure = secure || p.TypeName == "close"
		}
		for cname, mk := range chunkings() {
			t.Run(name+"/"+cname, func(t *testing.T) {
				got := decodeChunks(key, stream, mk())
				var shas []string
				for _, m := range got.msgs {
					shas = append(shas, sha(m))
				}
				if !slices.Equal(shas, want) {
					t.Errorf("messages differ")
				}
				if got.secure != secure {
					t.Errorf("secure %v", got.secure)
				}
				class := "InsecureClosingError"
				if secure {
					class = "ConnectionClosedException"
				}
				checkErrClass(t, got.err, class)
			})
		}
	}
}
