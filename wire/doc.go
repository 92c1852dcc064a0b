// Package wire holds the usocks wire formats as pure functions: bytes in,
// values out, no I/O, goroutines, logging, clocks or package-level mutable
// state. Randomness is passed in as io.Reader so vectors replay bit for bit.
//
// Protocol v2 is specified in SPEC-v2.md beside this file:
//
//   - keys.go: the PSK (base64 key or Argon2id passphrase) and the HKDF key
//     schedule;
//   - handshake.go: the client's first flight and the server's reply,
//     carrying salts, timestamps and ephemeral X25519 keys, all sealed;
//   - record.go: records with sealed lengths and counter nonces (Sealer,
//     Opener), the only holders of key state;
//   - frame.go: tunnel frames (STREAM with SYN/DAT/FIN/RST, WINDOW, PAD,
//     CLOSE, RESET, PING/PONG, reserved types).
//
// Legacy protocol v1 lives in the subpackage wire/v1.
package wire
