package v1_test

import (
	"errors"
	"fmt"

	v1 "usocks/wire/v1"
)

// A client sends SYN|DAT and a FIN over one record direction; the server
// side decodes the stream fed in small pieces and applies it to its
// tunnel endpoint.
func Example() {
	key := v1.DeriveKey("preshared_key")
	var iv, syncPlain [16]byte // random in real use (or use NewRandomSealer)
	sealer := v1.NewSealer(key, iv, syncPlain)

	var client v1.Endpoint
	var ids v1.IDAllocator
	id, _ := ids.Allocate()
	client.Open(id)
	stream := sealer.Sync()
	m, _ := client.SendData(id, []byte("hello"))
	stream = sealer.AppendMessage(stream, v1.AppendMessage(nil, m))
	m, _ = client.SendFIN(id)
	stream = sealer.AppendMessage(stream, v1.AppendMessage(nil, m))
	stream = sealer.AppendClose(stream, [4]byte{1, 2, 3, 4})

	var server v1.Endpoint
	opener := v1.NewOpener(key)
	for len(stream) > 0 {
		n := min(7, len(stream))
		opener.Feed(stream[:n])
		stream = stream[n:]
		for {
			ev, err := opener.Next()
			if errors.Is(err, v1.ErrNeedMore) {
				break
			}
			if err != nil {
				fmt.Println("error:", err)
				return
			}
			if ev.Kind != v1.EventMessage {
				fmt.Println("event:", ev.Kind)
				continue
			}
			msg, err := v1.ParseMessage(ev.Payload)
			if err != nil {
				fmt.Println("bad message:", err)
				continue
			}
			res, _ := server.Receive(msg)
			fmt.Printf("deliver %v id %d %q, reply %v\n", res.Deliver.Flags, res.Deliver.ID, res.Deliver.Payload, res.Reply.Flags)
		}
	}
	fmt.Println("end:", opener.EOF())
	// Output:
	// deliver SYN|DAT id 1 "hello", reply 0
	// deliver FIN id 1 "", reply FIN
	// event: close
	// end: usocks/v1: connection closed
}
