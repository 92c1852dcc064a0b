package wire

import (
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"crypto/sha256"
	"testing"
)

// hybridVector is one known answer of the hybrid key schedule (§2a):
// every input that is random in a real handshake is drawn from a fixed
// seed, and every intermediate value is pinned.
type hybridVector struct {
	Name           string `json:"name"`
	PSK            string `json:"psk_hex"`
	SaltC          string `json:"salt_c_hex"`
	SaltS          string `json:"salt_s_hex"`
	PubC           string `json:"e_c_hex"`
	PubS           string `json:"e_s_hex"`
	SharedX        string `json:"ss_x25519_hex"`
	KEMSeed        string `json:"mlkem_seed_hex"`
	EncapsRandom   string `json:"mlkem_encaps_random_hex"`
	EKSHA256       string `json:"ek_sha256_hex"`
	CTSHA256       string `json:"ct_sha256_hex"`
	SharedPQ       string `json:"ss_mlkem_hex"`
	C2S            string `json:"k_c2s_hex"`
	S2C            string `json:"k_s2c_hex"`
	ClassicC2S     string `json:"classic_k_c2s_hex"`
	FirstRecordC2S string `json:"first_record_c2s_hex"`
}

type hybridFile struct {
	Format  string         `json:"format"`
	Vectors []hybridVector `json:"vectors"`
}

// hybridCase computes one vector from a seed. The data keys are checked
// against crypto/hkdf called with the labels spelled out here, so the
// vector does not merely repeat DeriveHybridSessionKeys.
func hybridCase(t *testing.T, name string) hybridVector {
	r := newDetReader("hybrid " + name)
	psk := PSK(r.bytes32())
	saltC, saltS := r.bytes32(), r.bytes32()
	ec, err := NewEphemeral(r)
	if err != nil {
		t.Fatal(err)
	}
	es, err := NewEphemeral(r)
	if err != nil {
		t.Fatal(err)
	}
	pc, ps := ec.Public(), es.Public()
	ssX, err := ec.Shared(ps)
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, mlkem.SeedSize)
	_, _ = r.Read(seed)
	rnd := r.bytes32()
	dk, err := mlkem.NewDecapsulationKey768(seed)
	if err != nil {
		t.Fatal(err)
	}
	ek := dk.EncapsulationKey().Bytes()
	ssPQ, ct, err := mlkemtest.Encapsulate768(dk.EncapsulationKey(), rnd[:])
	if err != nil {
		t.Fatal(err)
	}
	if back, err := dk.Decapsulate(ct); err != nil || string(back) != string(ssPQ) {
		t.Fatalf("decapsulation: %v", err)
	}
	if len(ek) != KEMEncapsulationKeySize || len(ct) != KEMCiphertextSize {
		t.Fatalf("sizes: ek %d, ct %d", len(ek), len(ct))
	}
	hkc := ClientHandshakeKey(&psk, &saltC)
	hks := ServerHandshakeKey(&psk, &saltC, &saltS)
	k := DeriveHybridSessionKeys(ssX, ssPQ, &hkc, &hks, &pc, &ps, ek, ct)

	th := sha256.Sum256(append(append([]byte(nil), ek...), ct...))
	indep := func(label string) string {
		out, err := hkdf.Key(sha256.New, append(append([]byte(nil), ssX...), ssPQ...), append(hkc[:], hks[:]...),
			label+string(pc[:])+string(ps[:])+string(th[:]), 32)
		if err != nil {
			t.Fatal(err)
		}
		return hexs(out)
	}
	if hexs(k.C2S[:]) != indep("usocks v2 hybrid data c2s") || hexs(k.S2C[:]) != indep("usocks v2 hybrid data s2c") {
		t.Fatal("DeriveHybridSessionKeys differs from HKDF with the spec's labels")
	}
	classic := DeriveSessionKeys(ssX, &hkc, &hks, &pc, &ps)
	if classic.C2S == k.C2S || classic.S2C == k.S2C {
		t.Fatal("the hybrid keys equal the classic ones: ML-KEM is not mixed in")
	}
	a, err := NewAEAD(CipherChaCha20Poly1305, &k.C2S)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := NewSealer(a).SealBox(nil, []byte("first record"))
	ekh, cth := sha256.Sum256(ek), sha256.Sum256(ct)
	return hybridVector{
		Name: name, PSK: hexs(psk[:]), SaltC: hexs(saltC[:]), SaltS: hexs(saltS[:]), PubC: hexs(pc[:]), PubS: hexs(ps[:]),
		SharedX: hexs(ssX), KEMSeed: hexs(seed), EncapsRandom: hexs(rnd[:]), EKSHA256: hexs(ekh[:]), CTSHA256: hexs(cth[:]),
		SharedPQ: hexs(ssPQ), C2S: hexs(k.C2S[:]), S2C: hexs(k.S2C[:]), ClassicC2S: hexs(classic.C2S[:]), FirstRecordC2S: hexs(rec),
	}
}

// TestHybridKAT pins the hybrid key schedule (testdata/v2/hybrid.json):
//
//	go test ./wire/ -run TestHybridKAT -update
func TestHybridKAT(t *testing.T) {
	f := hybridFile{Format: "usocks v2 hybrid (X25519 + ML-KEM-768) key schedule known answers, SPEC-v2.md §2a; hex fields"}
	for _, name := range []string{"A", "B"} {
		f.Vectors = append(f.Vectors, hybridCase(t, name))
	}
	checkVectors(t, "hybrid.json", f)
}

// TestPSKAloneCannotDecryptRecordedSession: an eavesdropper recorded a
// hybrid handshake and the first record, and later holds the PSK and even
// breaks X25519 (a quantum computer: it learns ss_x25519). It opens both
// flights, reads every public value, and still cannot open the record:
// that needs the ML-KEM shared secret too. The real secret opens it (so
// the attacker's failure is not the test's).
func TestPSKAloneCannotDecryptRecordedSession(t *testing.T) {
	r := newDetReader("recorded session")
	psk := PSK(r.bytes32())
	ec, _ := NewEphemeral(r)
	es, _ := NewEphemeral(r)
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		t.Fatal(err)
	}
	ch := ClientHello{Salt: r.bytes32(), Time: 1, Cipher: CipherAES256GCM, Public: ec.Public(),
		Ext: Extensions{Extension{Type: ExtKEM, Value: dk.EncapsulationKey().Bytes()}}, PadLen: 100}
	clientFlight := AppendClientHello(nil, &psk, &ch)
	ssPQ, ct := dk.EncapsulationKey().Encapsulate()
	sh := ServerHello{Salt: r.bytes32(), Time: 1, ClientSalt: ch.Salt, Public: es.Public(),
		Ext: Extensions{Extension{Type: ExtKEM, Value: ct}}, PadLen: 50}
	serverFlight := AppendServerHello(nil, &psk, &sh)
	ssX, _ := ec.Shared(es.Public())
	hkc := ClientHandshakeKey(&psk, &ch.Salt)
	hks := ServerHandshakeKey(&psk, &ch.Salt, &sh.Salt)
	real := DeriveHybridSessionKeys(ssX, ssPQ, &hkc, &hks, &ch.Public, &sh.Public, dk.EncapsulationKey().Bytes(), ct)
	a, _ := NewAEAD(CipherAES256GCM, &real.C2S)
	record, _ := NewSealer(a).SealBox(nil, []byte("GET /secret HTTP/1.1"))

	// The attacker: the PSK, the recorded bytes, and ss_x25519.
	cr := NewClientHelloReader(&psk)
	rest, err := cr.OpenPrefix(clientFlight[:ClientPrefixLen])
	if err != nil {
		t.Fatal(err)
	}
	gotCH, err := cr.OpenRest(clientFlight[ClientPrefixLen : ClientPrefixLen+rest])
	if err != nil {
		t.Fatal(err)
	}
	sr := NewServerHelloReader(&psk, gotCH.Salt)
	rest, err = sr.OpenPrefix(serverFlight[:ServerPrefixLen])
	if err != nil {
		t.Fatal(err)
	}
	gotSH, err := sr.OpenRest(serverFlight[ServerPrefixLen : ServerPrefixLen+rest])
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := gotCH.Ext.Get(ExtKEM)
	gotCT, _ := gotSH.Ext.Get(ExtKEM)
	hkc2 := ClientHandshakeKey(&psk, &gotCH.Salt)
	hks2 := ServerHandshakeKey(&psk, &gotCH.Salt, &gotSH.Salt)
	opens := func(k [KeySize]byte) bool {
		a, _ := NewAEAD(CipherAES256GCM, &k)
		_, err := NewOpener(a).OpenBox(nil, record)
		return err == nil
	}
	guesses := map[string][KeySize]byte{
		"classic schedule with ss_x25519":  DeriveSessionKeys(ssX, &hkc2, &hks2, &gotCH.Public, &gotSH.Public).C2S,
		"hybrid with a zero ML-KEM secret": DeriveHybridSessionKeys(ssX, make([]byte, 32), &hkc2, &hks2, &gotCH.Public, &gotSH.Public, ek, gotCT).C2S,
		"hybrid with ss_x25519 twice":      DeriveHybridSessionKeys(ssX, ssX, &hkc2, &hks2, &gotCH.Public, &gotSH.Public, ek, gotCT).C2S,
		"hybrid with the ciphertext's hash": func() [KeySize]byte {
			h := sha256.Sum256(gotCT)
			return DeriveHybridSessionKeys(ssX, h[:], &hkc2, &hks2, &gotCH.Public, &gotSH.Public, ek, gotCT).C2S
		}(),
	}
	for what, k := range guesses {
		if opens(k) {
			t.Errorf("the recorded record opened with the PSK and %s", what)
		}
	}
	if !opens(DeriveHybridSessionKeys(ssX, ssPQ, &hkc2, &hks2, &gotCH.Public, &gotSH.Public, ek, gotCT).C2S) {
		t.Fatal("the real ML-KEM secret does not open the record: the test proves nothing")
	}
}
