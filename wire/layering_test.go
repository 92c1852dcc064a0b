package wire

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// wire/ is bytes in, values out: no network, no files, no clock, no global
// randomness, no logger, and nothing from the layers above it.

// forbiddenImport reports why path may not be imported by non-test code in
// wire/ or its subpackages, or "" if it may.
func forbiddenImport(path string) string {
	switch {
	case path == "net" || strings.HasPrefix(path, "net/"):
		return "network I/O belongs in stages/"
	case path == "os" || strings.HasPrefix(path, "os/"):
		return "files, env and processes belong in runner/"
	case path == "time":
		return "the clock is injected, never read"
	case path == "math/rand" || strings.HasPrefix(path, "math/rand/"):
		return "randomness is an io.Reader from the caller"
	case path == "github.com/sirupsen/logrus" || strings.HasPrefix(path, "github.com/sirupsen/logrus/"):
		return "wire/ does not log"
	case path == "usocks/stages" || strings.HasPrefix(path, "usocks/stages/"):
		return "stages/ sits above wire/"
	case path == "usocks/runner" || strings.HasPrefix(path, "usocks/runner/"):
		return "runner/ sits above wire/"
	}
	return ""
}

func TestForbiddenImportRule(t *testing.T) {
	for _, p := range []string{"net", "net/netip", "os", "os/exec", "time", "math/rand", "math/rand/v2",
		"github.com/sirupsen/logrus", "github.com/sirupsen/logrus/hooks/test", "usocks/stages", "usocks/stages/x", "usocks/runner"} {
		if forbiddenImport(p) == "" {
			t.Errorf("%s is allowed", p)
		}
	}
	for _, p := range []string{"crypto/rand", "encoding/binary", "golang.org/x/crypto/argon2", "usocks/wire/v1", "network", "timeutil", "usocks/stagesx"} {
		if forbiddenImport(p) != "" {
			t.Errorf("%s is refused", p)
		}
	}
}

// directImports returns, for every non-test .go file in dir (any build
// tags), its import paths.
func directImports(t *testing.T, dir string) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatalf("parsing %s: %v", f, err)
		}
		for _, im := range af.Imports {
			p, err := strconv.Unquote(im.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			out[f] = append(out[f], p)
		}
	}
	return out
}

func TestLayering(t *testing.T) {
	// wire/ and every package below it (wire/v1 and any added later).
	var dirs []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || (path != "." && strings.HasPrefix(d.Name(), "."))) {
			return filepath.SkipDir
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{".", "v1"} {
		if !slices.Contains(dirs, must) {
			t.Fatalf("package directory %q not found", must)
		}
	}
	checked := map[string]int{}
	for _, dir := range dirs {
		for file, imports := range directImports(t, dir) {
			checked[dir]++
			for _, p := range imports {
				if why := forbiddenImport(p); why != "" {
					t.Errorf("%s imports %q: %s", file, p, why)
				}
			}
		}
	}
	if checked["."] == 0 || checked["v1"] == 0 {
		t.Fatalf("no non-test files checked in wire or wire/v1: %v", checked)
	}
}
