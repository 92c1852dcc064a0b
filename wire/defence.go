package wire

import "fmt"

// DefencePolicy is a traffic-analysis defence policy (SPEC-v2.md §7a). The
// client asks for one in its hello (ExtDefence); the server answers with
// the policy both sides use, never more than it allows. The order is the
// order of cost and strength: a server caps a request by taking the lower.
type DefencePolicy uint8

// Defence policies.
const (
	DefenceOff DefencePolicy = iota
	DefenceLight
	DefenceStandard
	DefenceMax
)

var defenceNames = [...]string{"off", "light", "standard", "max"}

func (p DefencePolicy) String() string {
	if int(p) < len(defenceNames) {
		return defenceNames[p]
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// Valid says whether p is a known policy.
func (p DefencePolicy) Valid() bool { return int(p) < len(defenceNames) }

// ParseDefencePolicy maps a config value to a policy.
func ParseDefencePolicy(s string) (DefencePolicy, error) {
	for i, n := range defenceNames {
		if s == n {
			return DefencePolicy(i), nil
		}
	}
	return 0, fmt.Errorf("%q: want off, light, standard or max", s)
}

// DefenceExt is the handshake extension that carries p.
func DefenceExt(p DefencePolicy) Extension {
	return Extension{Type: ExtDefence, Value: []byte{byte(p)}}
}

// DefenceOf reads the policy a hello carries: off when the extension is
// missing; an error when it is malformed or names no known policy.
func DefenceOf(e Extensions) (DefencePolicy, error) {
	v, ok := e.Get(ExtDefence)
	if !ok {
		return DefenceOff, nil
	}
	if len(v) != 1 || !DefencePolicy(v[0]).Valid() {
		return 0, ErrHandshake
	}
	return DefencePolicy(v[0]), nil
}
