package stages

import (
	"crypto/mlkem"
	"fmt"
	"io"

	"usocks/wire"
)

// The post-quantum half of the hybrid handshake (SPEC-v2.md §2a):
// ML-KEM-768 beside X25519.

// kemKey draws the client's ML-KEM-768 decapsulation key from h.Rand (nil
// without PostQuantum).
func (h *ClientHandshake) kemKey() (*mlkem.DecapsulationKey768, error) {
	if !h.PostQuantum {
		return nil, nil
	}
	seed := make([]byte, mlkem.SeedSize)
	if _, err := io.ReadFull(h.Rand, seed); err != nil {
		return nil, err
	}
	return mlkem.NewDecapsulationKey768(seed)
}

// decapsulate returns the ML-KEM shared secret of the server's reply (nil
// if the client did not offer one). A reply without the ciphertext to an
// offer is a failed handshake: the key exchange is never silently dropped.
func decapsulate(dk *mlkem.DecapsulationKey768, sh *wire.ServerHello) ([]byte, error) {
	if dk == nil {
		if _, ok := sh.Ext.Get(wire.ExtKEM); ok {
			return nil, ErrServerAuth // an answer to a question not asked
		}
		return nil, nil
	}
	ct, ok := sh.Ext.Get(wire.ExtKEM)
	if !ok {
		return nil, fmt.Errorf("%w: the server did not answer the post-quantum key exchange", ErrServerAuth)
	}
	ss, err := dk.Decapsulate(ct)
	if err != nil {
		return nil, ErrServerAuth
	}
	return ss, nil
}

// encapsulate answers a client's ML-KEM offer: the shared secret and the
// ciphertext for the reply (both nil without an offer).
func encapsulate(ch *wire.ClientHello) (shared, ct []byte, err error) {
	ekb, ok := ch.Ext.Get(wire.ExtKEM)
	if !ok {
		return nil, nil, nil
	}
	ek, err := mlkem.NewEncapsulationKey768(ekb)
	if err != nil {
		return nil, nil, &errReject{why: "bad ML-KEM encapsulation key"}
	}
	shared, ct = ek.Encapsulate()
	return shared, ct, nil
}
