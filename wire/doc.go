// Package wire holds the usocks wire formats as pure functions: bytes in,
// values out, no I/O, goroutines, logging, clocks or package-level mutable
// state. Randomness is passed in as io.Reader so vectors replay bit for bit.
//
// Protocol v2 is specified in SPEC-v2.md beside this file:
//
//   - keys.go: the PSK (base64 key or Argon2id passphrase) and the HKDF key
//     schedule, rekeying included;
//   - handshake.go, extension.go: the client's first flight and the
//     server's reply, carrying salts, timestamps, ephemeral X25519 keys and
//     extensions, all sealed; defence.go: the defence-policy extension;
//   - identity.go: the encrypted identity hint of multi-user servers;
//   - record.go: records with sealed lengths and counter nonces (Sealer,
//     Opener), the only holders of key state; record_reader.go: records
//     reassembled from chunks of any size and opened in order;
//   - frame.go: tunnel frames (STREAM with SYN/DAT/FIN/RST, WINDOW, PAD,
//     CLOSE, RESET, PING/PONG, KEYUPDATE, DATAGRAM, reserved types);
//   - fet.go: the fully-encrypted-traffic exemption rules that first
//     flights are checked against.
//
// Legacy protocol v1 lives in the subpackage wire/v1.
package wire
