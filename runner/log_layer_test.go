package runner

import (
	"maps"
	"slices"
	"testing"
	"time"
)

// TestStageLogLayer: every line a pipeline stage logs names its stage and
// the layer the stage belongs to (README "How it is built"): the backend
// reader and writer are the backend layer; decrypt, encrypt and the
// defence the record layer; demux, mux, the resend buffer and the lanes
// the tunnel layer. One tunnel resumable on one connection (resend) and
// one over multi_tcp lanes, both sides; every stage must have logged.
func TestStageLogLayer(t *testing.T) {
	want := map[string]string{
		"backend-reader": "backend", "backend-writer": "backend",
		"decrypt": "record", "encrypt": "record", "defence": "record",
		"demux": "tunnel", "mux": "tunnel", "resend": "tunnel", "lanes": "tunnel",
	}
	seen := map[string]bool{}
	for _, o := range []tunnelOpts{
		{resume: 30 * time.Second},
		{backend: "multi_tcp", resume: 30 * time.Second},
	} {
		tn, _ := startWithTarget(t, o)
		echoMany(t, tn, 4, 64<<10)
		tn.stop()
		for _, e := range tn.hook.AllEntries() {
			stage, ok := e.Data["stage"].(string)
			if !ok {
				continue
			}
			seen[stage] = true
			if layer, exp := e.Data["layer"], want[stage]; exp == "" || layer != exp {
				t.Errorf("%q from stage %s has layer=%v, want %q", e.Message, stage, layer, exp)
			}
		}
	}
	for _, stage := range slices.Sorted(maps.Keys(want)) {
		if !seen[stage] {
			t.Errorf("stage %s logged nothing (debug level): its layer is untested", stage)
		}
	}
}
