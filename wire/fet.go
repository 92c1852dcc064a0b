package wire

import "math/bits"

// Exemption rules of the fully-encrypted-traffic detector described by Wu
// et al., "How the Great Firewall of China Detects and Blocks Fully
// Encrypted Traffic" (USENIX Security 2023). A connection's first client
// payload is left alone (exempt) if any rule holds; otherwise it is a
// candidate for blocking. usocks uses this to check its own first flights:
// the raw backend is not exempt (it looks random), the TLS backend is (Ex5),
// and a printable prefix makes the raw backend exempt (Ex2).

// FETExemption returns the first exemption rule that payload meets ("Ex1"
// to "Ex5"), or "" if it meets none.
func FETExemption(p []byte) string {
	if len(p) == 0 {
		return "Ex1"
	}
	// Ex1: average set bits per byte ≤ 3.4 or ≥ 4.6.
	ones := 0
	for _, b := range p {
		ones += bits.OnesCount8(b)
	}
	if avg := float64(ones) / float64(len(p)); avg <= 3.4 || avg >= 4.6 {
		return "Ex1"
	}
	printable := func(b byte) bool { return b >= 0x20 && b <= 0x7e }
	// Ex2: the first six bytes are printable.
	if len(p) >= 6 {
		ok := true
		for _, b := range p[:6] {
			ok = ok && printable(b)
		}
		if ok {
			return "Ex2"
		}
	}
	// Ex3: more than half the bytes are printable.
	n, run, longest := 0, 0, 0
	for _, b := range p {
		if printable(b) {
			n++
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	if n*2 > len(p) {
		return "Ex3"
	}
	// Ex4: more than 20 contiguous printable bytes.
	if longest > 20 {
		return "Ex4"
	}
	// Ex5: the first bytes match TLS or HTTP.
	if len(p) >= 3 && p[0] >= 0x14 && p[0] <= 0x17 && p[1] == 0x03 && p[2] <= 0x03 {
		return "Ex5"
	}
	for _, m := range []string{"GET ", "PUT ", "POST ", "HEAD "} {
		if len(p) >= len(m) && string(p[:len(m)]) == m {
			return "Ex5"
		}
	}
	return ""
}
