package stages

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// A buffer released twice would later be shared by two frames: in
	// tests it is a panic at the second release, where the stack shows
	// the culprit.
	doubleRelease = func(*payloadBuf) { panic("stages: payload buffer released twice") }
	goleak.VerifyTestMain(m)
}
