package stages

import (
	"context"

	"usocks/wire"
)

// Resumption in the handshake (SPEC-v2.md §7b). Every v2 client hello
// carries the resume extension (session id, frames received); a server
// that resumes sessions answers every one with its own (status, frames
// received). A resumption is therefore the same handshake as a new
// session: same flights, same checks (authentication, salt replay
// protection, fresh ephemeral keys), and nothing in the clear.

// Resumption is what the two hellos said about resuming.
type Resumption struct {
	Offer wire.ClientResume // the client's extension
	Reply wire.ServerResume // the server's
	// Claim is the server's hold on the session it resumes (or starts),
	// as its ResumeHook returned it; nil on the client.
	Claim any
}

// ResumeHook is how a server's handshake finds the session a client
// resumes. Claim runs after the flight has authenticated and its salt was
// accepted, before the reply is sent: it answers with the status and the
// server's received count, and returns a claim that the caller of the
// handshake gets back in Keys.Resume. If the handshake fails after Claim,
// Abort is called with the same Resumption.
type ResumeHook interface {
	Claim(ctx context.Context, user wire.UserID, offer wire.ClientResume) (wire.ServerResume, any)
	Abort(*Resumption)
}

// serverResumption reads the client's resume extension and claims its
// session; nil when the client sent none or the server does not resume.
func (h *ServerHandshake) serverResumption(ctx context.Context, ch *wire.ClientHello, uid wire.UserID) (*Resumption, error) {
	offer, ok, err := wire.ClientResumeOf(ch.Ext)
	if err != nil {
		return nil, &errReject{why: "bad resume extension"}
	}
	if !ok || h.Resume == nil {
		return nil, nil
	}
	reply, claim := h.Resume.Claim(ctx, uid, offer)
	return &Resumption{Offer: offer, Reply: reply, Claim: claim}, nil
}

// clientResumption checks the server's answer to offer (nil: none sent).
// A server that answers what was not asked, or answers malformed, fails
// the handshake like any other bad reply.
func clientResumption(offer *wire.ClientResume, sh *wire.ServerHello) (*Resumption, error) {
	reply, ok, err := wire.ServerResumeOf(sh.Ext)
	switch {
	case err != nil || (ok && offer == nil) || (ok && reply.Lanes > offer.Lanes):
		return nil, ErrServerAuth
	case !ok:
		return nil, nil // a server that does not resume sessions
	}
	return &Resumption{Offer: *offer, Reply: reply}, nil
}
