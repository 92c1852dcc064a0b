package v1

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// vectorDir is the repository copy of the usocks v1 vectors.
const vectorDir = "../../testdata/usocks-v1"

func loadJSON(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatalf("reading vector file: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func unhex16(t testing.TB, s string) [16]byte {
	t.Helper()
	b := unhex(t, s)
	if len(b) != 16 {
		t.Fatalf("want 16 bytes, got %d in %q", len(b), s)
	}
	return [16]byte(b)
}

func unhex4(t testing.TB, s string) [4]byte {
	t.Helper()
	b := unhex(t, s)
	if len(b) != 4 {
		t.Fatalf("want 4 bytes, got %d in %q", len(b), s)
	}
	return [4]byte(b)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ruleBytes is the vectors' message rule: byte i = (seed + 7*i) mod 251.
func ruleBytes(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((seed + 7*i) % 251)
	}
	return b
}

// recordPacket is one entry of a packets[] array.
type recordPacket struct {
	Type          int     `json:"type"`
	TypeName      string  `json:"type_name"`
	DataLen       int     `json:"data_len"`
	PaddingLen    int     `json:"padding_len"`
	HeaderHex     string  `json:"header_hex"`
	PaddingHex    string  `json:"padding_hex"`
	DigestHex     string  `json:"digest_hex"`
	PlaintextLen  int     `json:"plaintext_len"`
	PlaintextSHA  string  `json:"plaintext_sha256"`
	PlaintextHex  *string `json:"plaintext_hex"`
	StreamOffset  int     `json:"stream_offset"`
	CiphertextHex string  `json:"ciphertext_hex"`
	FromCall      int     `json:"from_call"`
	Tunnel        *struct {
		Version    int     `json:"version"`
		Flags      int     `json:"flags"`
		ConnID     int     `json:"conn_id"`
		PayloadLen int     `json:"payload_len"`
		PacketHex  *string `json:"packet_hex"`
		PacketSHA  string  `json:"packet_sha256"`
	} `json:"tunnel"`
}

type lenSHA struct {
	Len    int    `json:"len"`
	SHA256 string `json:"sha256"`
}

type recordFile struct {
	KeyDerivation []struct {
		Key       string `json:"key"`
		AESKeyHex string `json:"aes_key_hex"`
	} `json:"key_derivation"`
	Streams []struct {
		Name          string `json:"name"`
		Key           string `json:"key"`
		AESKeyHex     string `json:"aes_key_hex"`
		IVHex         string `json:"iv_hex"`
		SyncPlainHex  string `json:"sync_plaintext_hex"`
		SyncCipherHex string `json:"sync_ciphertext_hex"`
		Calls         []struct {
			Call        string `json:"call"`
			MessageLen  int    `json:"message_len"`
			MessageSeed int    `json:"message_seed"`
			PaddingHex  string `json:"padding_hex"`
			Packets     int    `json:"packets"`
		} `json:"calls"`
		Packets   []recordPacket `json:"packets"`
		StreamLen int            `json:"stream_len"`
		StreamSHA string         `json:"stream_sha256"`
		Receiver  struct {
			Delivered    []lenSHA `json:"delivered"`
			SecureClosed bool     `json:"secure_closed"`
			Error        string   `json:"error"`
			ErrorPhase   string   `json:"error_phase"`
		} `json:"receiver"`
	} `json:"streams"`
}

// errorClasses maps the vectors' exception names to this package's errors.
var errorClasses = map[string]error{
	"ConnectionClosedException": ErrConnectionClosed,
	"InsecureClosingError":      ErrInsecureClose,
	"RemoteResetException":      ErrRemoteReset,
	"FirstPacketIncorrectError": ErrFirstPacketIncorrect,
	"HashfailError":             ErrHashFail,
	"InvalidHeaderError":        ErrInvalidHeader,
}

// decoded is what a receiver made of a stream followed by end of file.
type decoded struct {
	msgs   [][]byte
	closes int
	err    error
	phase  string // "data" or "eof"
	secure bool
}

// decodeChunks feeds stream to a new Opener cut at the given chunk sizes
// (the last chunk takes the rest), draining Next after every feed.
func decodeChunks(key [16]byte, stream []byte, sizes func() int) decoded {
	o := NewOpener(key)
	var d decoded
	drain := func() bool {
		for {
			ev, err := o.Next()
			if errors.Is(err, ErrNeedMore) {
				return true
			}
			if err != nil {
				d.err, d.phase = err, "data"
				return false
			}
			switch ev.Kind {
			case EventMessage:
				d.msgs = append(d.msgs, append([]byte{}, ev.Payload...))
			case EventClose:
				d.closes++
			}
		}
	}
	for len(stream) > 0 {
		n := min(sizes(), len(stream))
		o.Feed(stream[:n])
		stream = stream[n:]
		if !drain() {
			break
		}
	}
	if d.err == nil {
		d.err, d.phase = o.EOF(), "eof"
	}
	d.secure = o.SecureClosed()
	return d
}

// chunkings returns the ways every stream is cut when decoding.
func chunkings() map[string]func() func() int {
	return map[string]func() func() int{
		"whole":  func() func() int { return func() int { return 1 << 30 } },
		"byte":   func() func() int { return func() int { return 1 } },
		"odd17":  func() func() int { return func() int { return 17 } },
		"random": randomChunks(1),
		"randomSmall": func() func() int {
			r := rand.New(rand.NewPCG(7, 7))
			return func() int { return r.IntN(40) }
		},
	}
}

// randomChunks returns chunk sizes from a fixed seed, from 0 to 5000.
func randomChunks(seed uint64) func() func() int {
	return func() func() int {
		r := rand.New(rand.NewPCG(seed, 42))
		return func() int {
			if r.IntN(4) == 0 {
				return r.IntN(32)
			}
			return r.IntN(5000)
		}
	}
}

// checkErrClass checks that err is of the named vector class and of no
// other class that would change what the receiver does.
func checkErrClass(t *testing.T, err error, class string) {
	t.Helper()
	want, ok := errorClasses[class]
	if !ok {
		t.Fatalf("unknown error class %q", class)
	}
	if !errors.Is(err, want) {
		t.Errorf("error = %v, want class %s", err, class)
	}
	for name, other := range errorClasses {
		if name != class && errors.Is(err, other) {
			t.Errorf("error %v also matches class %s", err, name)
		}
	}
}
