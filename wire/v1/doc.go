// Package v1 is a pure codec for the legacy usocks protocol v1, the wire
// format of the original Python implementation (upsuper/usocks, 2011,
// commit 8e52664). It is byte-exact with that implementation: every
// vector in testdata/usocks-v1 is reproduced and decoded by the tests.
//
// The authoritative description is the usocks v1 wire specification
// (usocks-v1.md in the project's shared spec directory; the vector
// README in testdata/usocks-v1 describes the test data). This comment
// summarises it; section numbers (§) refer to it.
//
// The package does no I/O: it has no network code, no goroutines, no
// logging, no clock and no package-level mutable state. Randomness is
// passed in as an io.Reader or as explicit bytes. Callers own the
// sockets and write out what the encoders append.
//
// # Layers
//
//	app ──TCP── client ═══ backend (1 or N TCP connections) ═══ server ──TCP── target
//
// One backend carries one record channel (two independent directions),
// which carries one tunnel of many streams. All integers are unsigned
// big-endian.
//
// # Key (§2)
//
// The AES-128 key is MD5 of the pre-shared key string's UTF-8 bytes
// (DeriveKey). The same key serves both directions and every session.
//
// # Record layer (§3): Sealer and Opener
//
// Each direction is one AES-128-CBC chain for the life of the backend.
// The sender first sends a 16-byte sync block C0 (the original computes
// C0 = AES_K(S xor IV) from a random IV and block S; drawing C0 at random
// is equivalent). Then every packet is encrypted as the continuation of
// the chain: equivalently, the stream is C0 followed by AES-CBC with
// IV = C0 over the concatenated packets. The receiver uses the first 16
// bytes only as the chaining value.
//
// Packet plaintext (the whole packet is a multiple of 16 bytes):
//
//	| offset      | size | field   | meaning                                       |
//	|-------------|------|---------|-----------------------------------------------|
//	| 0           | 2    | L       | data length, 0..65535                         |
//	| 2           | 1    | P       | padding length, 0..255                        |
//	| 3           | 1    | T       | packet type (below)                           |
//	| 4           | L    | data    | message bytes                                 |
//	| 4+L         | P    | padding | not checked by receivers                      |
//	| 4+L+P       | 8    | digest  | first 8 bytes of MD5(header || data || padding) |
//
// Packet types (PacketType):
//
//	| T   | name   | data | meaning                                                 |
//	|-----|--------|------|---------------------------------------------------------|
//	| 1   | data   | yes  | last or only piece: deliver pending parts + this data   |
//	| 2   | part   | yes  | non-final piece: keep it                                |
//	| 3   | nodata | no   | filler, no effect (the original never sends it)         |
//	| 254 | reset  | no   | tear the channel down at once                           |
//	| 255 | close  | no   | clean close follows; remembered, reading goes on        |
//
// Sender rules (§3.5, Sealer.AppendMessage): a message of n <= 65535
// bytes is one data packet with P = (16 - (n+12) mod 16) mod 16 padding
// bytes, each of value P. A longer message is part packets of 65524
// bytes with P = 0, then one data packet for the rest. close and reset
// have L = 0, P = 4 and 4 random padding bytes (one block).
//
// Receiver rules (§3.6, Opener): after dropping block 0, decrypt whole
// blocks; read L, P, T as soon as the first block of a packet is
// decrypted. The header is invalid if 12+L+P is not a multiple of 16, T
// is not one of the five types, or T is nodata/reset/close with L != 0.
// Then wait for the whole packet and check its digest. data delivers a
// message; close is remembered; reset stops. End of stream after a close
// is a clean end (ErrConnectionClosed), without one it is insecure
// (ErrInsecureClose). A header or digest failure before any packet has
// passed its digest is ErrFirstPacketIncorrect: the receiver answers
// nothing. After that, ErrInvalidHeader or ErrHashFail: the receiver
// sends a reset packet (NeedsReset), then closes.
//
// # Tunnel layer (§4): Message, Endpoint, IDAllocator
//
// Each record message is one tunnel message:
//
//	| offset | size | field   | meaning                                          |
//	|--------|------|---------|--------------------------------------------------|
//	| 0      | 1    | version | always 1                                         |
//	| 1      | 1    | flags   | 0x01 SYN, 0x02 DAT, 0x04 FIN, 0x08 RST; upper 4 bits reserved (sent 0) |
//	| 2      | 2    | id      | connection id, 1..65534, chosen by the client    |
//	| 4      | rest | payload | stream data, meaningful only with DAT            |
//
// The client's first data on a stream goes out as SYN|DAT, later data as
// DAT. A local close sends FIN, a local reset RST, but only on a
// connected stream. The peer answers every FIN and RST it did not start;
// an id is freed when the peer's FIN or RST arrives. Endpoint implements
// the exact receive rules of §4.5; IDAllocator the client's id choice.
//
// # multi_tcp striping (§5.2): Lane, Striper, Reassembler
//
// With N connections (lanes) and stripe size B, the byte at offset o of
// a direction's stream (o = 0 is the first byte of C0) travels on lane
// floor(o / B) mod N. The receiver reads exactly B bytes from lane 0,
// then B from lane 1, and so on round-robin. Defaults: N = 5, B = 8192.
//
// # Using the package
//
// Sending one direction:
//
//	s, err := v1.NewRandomSealer(v1.DeriveKey(passphrase), rand.Reader)
//	out := s.Sync()                                  // first 16 bytes
//	out = s.AppendMessage(out, v1.AppendMessage(nil, msg))
//	out = s.AppendClose(out, pad)                    // before closing
//
// Receiving the other direction:
//
//	o := v1.NewOpener(v1.DeriveKey(passphrase))
//	o.Feed(chunk)                                    // any split
//	for {
//		ev, err := o.Next()                          // until ErrNeedMore
//		...
//	}
//	err := o.EOF()                                   // at end of file
//
// Each received message goes through v1.ParseMessage and Endpoint.Receive;
// local events go through Endpoint.SendData, SendFIN and SendRST.
//
// # Deliberate differences from the original
//
//   - A message assembled from part packets is capped at MaxMessageSize
//     (16 MiB); beyond that Opener fails with ErrMessageTooLarge, an
//     invalid-header class error. The original buffered without limit.
//   - Messages shorter than 4 bytes and versions other than 1 are
//     rejected with errors (ErrShortMessage, ErrBadVersion) instead of
//     crashing; messages for unknown ids give ErrUnknownID instead of
//     KeyError. Callers should ignore the message (§4.5 rule 7).
//   - Closing or resetting a stream that never sent anything frees the id
//     at once (the original leaked it).
//   - IDAllocator hands out the most recently freed id first; the
//     original's choice among freed ids was arbitrary.
//   - Flags with only reserved bits set are not delivered to the
//     application (the original passed them up, to no effect).
package v1
