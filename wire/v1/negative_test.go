package v1

import (
	"bytes"
	"encoding/hex"
	"testing"
)

type negativeFile struct {
	Key        string `json:"key"`
	AESKeyHex  string `json:"aes_key_hex"`
	BaseStream struct {
		IVHex           string   `json:"iv_hex"`
		SyncPlainHex    string   `json:"sync_plaintext_hex"`
		ClosePaddingHex string   `json:"close_padding_hex"`
		TunnelMessages  []string `json:"tunnel_messages_hex"`
		Hex             string   `json:"hex"`
	} `json:"base_stream"`
	ReceiverRandomness struct {
		IVHex           string `json:"iv_hex"`
		SyncPlainHex    string `json:"sync_plaintext_hex"`
		ResetPaddingHex string `json:"reset_padding_hex"`
	} `json:"receiver_randomness"`
	Cases []negativeCase `json:"cases"`
}

type negativeCase struct {
	Name            string   `json:"name"`
	InputLen        int      `json:"input_len"`
	InputHex        string   `json:"input_hex"`
	DeliveredHex    []string `json:"delivered_hex"`
	Error           string   `json:"error"`
	ErrorPhase      string   `json:"error_phase"`
	SecureClosed    bool     `json:"secure_closed"`
	ResetSent       bool     `json:"reset_sent"`
	ReceiverOutput  string   `json:"receiver_output_hex"`
	ReceiverKey     string   `json:"receiver_key"`
	TunnelError     string   `json:"tunnel_error"`
	DerivedFromBase *struct {
		FlipOffset *int `json:"flip_offset"`
		FlipMask   int  `json:"flip_mask"`
		TruncateTo *int `json:"truncate_to"`
	} `json:"derived_from_base"`
	SenderIVHex       string   `json:"sender_iv_hex"`
	SenderSyncHex     string   `json:"sender_sync_plaintext_hex"`
	SenderPaddingsHex []string `json:"sender_random_paddings_hex"`
	SenderOps         []struct {
		Op           string  `json:"op"`
		DataHex      *string `json:"data_hex"`
		PlaintextHex *string `json:"plaintext_hex"`
		PaddingHex   *string `json:"padding_hex"`
		Type         *int    `json:"type"`
	} `json:"sender_ops"`
}

// TestNegativeBaseStream rebuilds the base stream from its inputs.
func TestNegativeBaseStream(t *testing.T) {
	var f negativeFile
	loadJSON(t, "negative.json", &f)
	bs := f.BaseStream
	s := NewSealer(DeriveKey(f.Key), unhex16(t, bs.IVHex), unhex16(t, bs.SyncPlainHex))
	got := s.Sync()
	for _, m := range bs.TunnelMessages {
		got = s.AppendMessage(got, unhex(t, m))
	}
	got = s.AppendClose(got, unhex4(t, bs.ClosePaddingHex))
	if hex.EncodeToString(got) != bs.Hex {
		t.Fatalf("base stream mismatch:\n got %x\nwant %s", got, bs.Hex)
	}
}

// TestNegativeEncode rebuilds every case's input: hand-made cases from
// their sender ops, the others from the base stream.
func TestNegativeEncode(t *testing.T) {
	var f negativeFile
	loadJSON(t, "negative.json", &f)
	key := DeriveKey(f.Key)
	base := unhex(t, f.BaseStream.Hex)
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			want := unhex(t, c.InputHex)
			if len(want) != c.InputLen {
				t.Fatalf("input_len %d, hex has %d", c.InputLen, len(want))
			}
			var got []byte
			switch {
			case len(c.SenderOps) > 0:
				got = encodeOps(t, key, c)
			case c.DerivedFromBase != nil:
				got = append([]byte{}, base...)
				if d := c.DerivedFromBase; d.FlipOffset != nil {
					got[*d.FlipOffset] ^= byte(d.FlipMask)
				}
				if d := c.DerivedFromBase; d.TruncateTo != nil {
					got = got[:*d.TruncateTo]
				}
			default:
				t.Fatal("case has neither sender_ops nor derived_from_base")
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("input mismatch:\n got %x\nwant %x", got, want)
			}
		})
	}
}

func encodeOps(t *testing.T, key [16]byte, c negativeCase) []byte {
	t.Helper()
	s := NewSealer(key, unhex16(t, c.SenderIVHex), unhex16(t, c.SenderSyncHex))
	out := s.Sync()
	pads := c.SenderPaddingsHex
	nextPad := func() [4]byte {
		if len(pads) == 0 {
			t.Fatal("out of sender paddings")
		}
		p := unhex4(t, pads[0])
		pads = pads[1:]
		return p
	}
	var err error
	for _, op := range c.SenderOps {
		switch op.Op {
		case "send":
			out = s.AppendMessage(out, unhex(t, *op.DataHex))
		case "raw":
			out, err = s.AppendRaw(out, PacketType(*op.Type), unhex(t, *op.DataHex), unhex(t, *op.PaddingHex))
		case "plain":
			out, err = s.AppendPlain(out, unhex(t, *op.PlaintextHex))
		case "close":
			out = s.AppendClose(out, nextPad())
		case "reset":
			out = s.AppendReset(out, nextPad())
		default:
			t.Fatalf("unknown op %q", op.Op)
		}
		if err != nil {
			t.Fatalf("op %s: %v", op.Op, err)
		}
	}
	return out
}

// TestNegativeDecode feeds every case to a receiver in several chunkings
// and checks the delivered messages, the final error, whether a reset
// is due, and the receiver's own output (sync block, plus reset).
func TestNegativeDecode(t *testing.T) {
	var f negativeFile
	loadJSON(t, "negative.json", &f)
	rr := f.ReceiverRandomness
	for _, c := range f.Cases {
		keyStr := f.Key
		if c.ReceiverKey != "" {
			keyStr = c.ReceiverKey
		}
		key := DeriveKey(keyStr)
		input := unhex(t, c.InputHex)
		for cname, mk := range chunkings() {
			t.Run(c.Name+"/"+cname, func(t *testing.T) {
				d := decodeChunks(key, input, mk())
				if len(d.msgs) != len(c.DeliveredHex) {
					t.Fatalf("delivered %d messages, want %d (err %v)", len(d.msgs), len(c.DeliveredHex), d.err)
				}
				for i, m := range d.msgs {
					if hex.EncodeToString(m) != c.DeliveredHex[i] {
						t.Errorf("message %d = %x, want %s", i, m, c.DeliveredHex[i])
					}
				}
				checkErrClass(t, d.err, c.Error)
				if d.phase != c.ErrorPhase {
					t.Errorf("error phase %s, want %s", d.phase, c.ErrorPhase)
				}
				if d.secure != c.SecureClosed {
					t.Errorf("secure_closed %v, want %v", d.secure, c.SecureClosed)
				}
				if NeedsReset(d.err) != c.ResetSent {
					t.Errorf("NeedsReset(%v) = %v, want reset_sent %v", d.err, NeedsReset(d.err), c.ResetSent)
				}
				// The receiver's own output: its sync block, then the
				// reset packet when one is due.
				rs := NewSealer(key, unhex16(t, rr.IVHex), unhex16(t, rr.SyncPlainHex))
				out := rs.Sync()
				if NeedsReset(d.err) {
					out = rs.AppendReset(out, unhex4(t, rr.ResetPaddingHex))
				}
				if hex.EncodeToString(out) != c.ReceiverOutput {
					t.Errorf("receiver output %x, want %s", out, c.ReceiverOutput)
				}
				if c.TunnelError != "" {
					checkTunnelError(t, d.msgs, c.TunnelError)
				}
			})
		}
	}
}

// checkTunnelError checks that some delivered message is rejected by the
// tunnel codec with the named original exception.
func checkTunnelError(t *testing.T, msgs [][]byte, name string) {
	t.Helper()
	want := tunnelErrors[name]
	for _, m := range msgs {
		if _, err := ParseMessage(m); err != nil {
			if err != want {
				t.Errorf("tunnel error %v, want %s", err, name)
			}
			return
		}
	}
	t.Errorf("no delivered message failed with %s", name)
}
