package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestTaskfileFuzzListsEveryTarget: `task fuzz` runs every fuzz target of
// the repository, each with its own package, and names no target that is
// gone. A new `func FuzzX(*testing.F)` fails this test until it is listed.
func TestTaskfileFuzzListsEveryTarget(t *testing.T) {
	root := filepath.Join("..", "..")
	have := fuzzTargets(t, root)
	if len(have) == 0 {
		t.Fatal("found no fuzz targets: is the repository root wrong?")
	}
	listed := taskfileFuzz(t, filepath.Join(root, "Taskfile.yml"))
	for _, k := range sortedKeys(have) {
		if !listed[k] {
			t.Errorf("Taskfile.yml fuzz task does not run %s (%s)", k, have[k])
		}
	}
	for _, k := range sortedKeys(listed) {
		if have[k] == "" {
			t.Errorf("Taskfile.yml fuzz task runs %s, which does not exist", k)
		}
	}
}

// fuzzTargets maps "./pkg/ FuzzX" to the file declaring it, for every fuzz
// target in the module under root.
func fuzzTargets(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, path := range goFiles(t, root) {
		if !strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			t.Fatal(err)
		}
		pkg := "./" + filepath.ToSlash(rel) + "/"
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if ok && fn.Recv == nil && strings.HasPrefix(fn.Name.Name, "Fuzz") && takesTestingF(fn) {
				out[pkg+" "+fn.Name.Name] = path
			}
		}
	}
	return out
}

// goFiles are the paths of the module's Go files under root, outside
// testdata, vendor and hidden directories.
func goFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func takesTestingF(fn *ast.FuncDecl) bool {
	ps := fn.Type.Params.List
	if len(ps) != 1 {
		return false
	}
	star, ok := ps[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	sel, ok := star.X.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "F"
}

// taskfileFuzz reads the fuzz task: each command runs the targets of its
// `for` list in the package named at the end of the command.
func taskfileFuzz(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Other tasks' commands are plain strings; only the fuzz task is
	// decoded as for-loops.
	var tf struct {
		Tasks map[string]yaml.Node `yaml:"tasks"`
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	node, ok := tf.Tasks["fuzz"]
	if !ok {
		t.Fatal("Taskfile.yml has no fuzz task")
	}
	var fuzz struct {
		Cmds []struct {
			For []string `yaml:"for"`
			Cmd string   `yaml:"cmd"`
		} `yaml:"cmds"`
	}
	if err := node.Decode(&fuzz); err != nil {
		t.Fatalf("fuzz task: %v", err)
	}
	out := map[string]bool{}
	for _, c := range fuzz.Cmds {
		fields := strings.Fields(c.Cmd)
		if len(fields) == 0 || !strings.Contains(c.Cmd, "-fuzz=") {
			t.Errorf("fuzz task command %q does not fuzz", c.Cmd)
			continue
		}
		pkg := fields[len(fields)-1]
		if !strings.HasPrefix(pkg, "./") || !strings.HasSuffix(pkg, "/") {
			t.Errorf("fuzz task command %q does not end in a package path ./dir/", c.Cmd)
			continue
		}
		for _, name := range c.For {
			if out[pkg+" "+name] {
				t.Errorf("Taskfile.yml fuzz task runs %s %s twice", pkg, name)
			}
			out[pkg+" "+name] = true
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestStaticcheckPinnedOnce: CI and `task lint` run the same staticcheck,
// pinned to one version.
func TestStaticcheckPinnedOnce(t *testing.T) {
	root := filepath.Join("..", "..")
	pin := func(path string) string {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		_, rest, ok := strings.Cut(string(b), "honnef.co/go/tools/cmd/staticcheck@")
		if !ok {
			t.Fatalf("%s does not run staticcheck at a pinned version", path)
		}
		v := strings.Fields(rest + " ")[0]
		if !strings.HasPrefix(v, "v") {
			t.Fatalf("%s pins staticcheck@%s, not a version", path, v)
		}
		return v
	}
	if ci, task := pin(".ci/run"), pin("Taskfile.yml"); ci != task {
		t.Fatalf(".ci/run pins staticcheck %s, Taskfile.yml %s", ci, task)
	}
}

// TestNoLargeSourceFile: no non-test Go file of the module is over 500
// lines, a rule of the project: a file that grows past it is split by
// what it does.
func TestNoLargeSourceFile(t *testing.T) {
	const limit = 500
	root := filepath.Join("..", "..")
	files := 0
	for _, path := range goFiles(t, root) {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files++
		if n := strings.Count(string(b), "\n"); n > limit {
			t.Errorf("%s: %d lines, over %d", path, n, limit)
		}
	}
	if files < 50 {
		t.Fatalf("read %d Go files: is the repository root wrong?", files)
	}
}
