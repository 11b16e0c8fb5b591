package arch

import (
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/bicot-rl/bicot"

// roles maps each role package to its binary and the type its constructor returns.
var roles = []struct{ pkg, binary, typ string }{
	{"pkg/coordinator", "coordinator", "Coordinator"},
	{"pkg/rolloutworker", "rollout-worker", "Worker"},
	{"pkg/rewardworker", "reward-worker", "Worker"},
	{"pkg/learner", "learner", "Learner"},
}

// mayImportRoles are the only packages whose code imports role packages: the binaries, laptop
// mode, the benchmarks that run laptop mode with simulated compute, and the end-to-end tests.
var mayImportRoles = []string{"coordinator", "rollout-worker", "reward-worker", "learner", "pkg/local", "pkg/bench", "e2e"}

func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return dir
}

// pkgs returns every package directory of the module (relative, slash-separated) with its imports.
func pkgs(t *testing.T) map[string]*build.Package {
	t.Helper()
	r := root(t)
	out := map[string]*build.Package{}
	err := filepath.WalkDir(r, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != r && (strings.HasPrefix(name, ".") || name == "testdata" || name == "results" || name == "data" || name == "models") {
			return filepath.SkipDir
		}
		p, err := build.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(r, path)
		out[filepath.ToSlash(rel)] = p
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func local(imp string) (string, bool) {
	if rest, ok := strings.CutPrefix(imp, module+"/"); ok {
		return rest, true
	}
	return "", false
}

func isRole(rel string) bool {
	return slices.ContainsFunc(roles, func(r struct{ pkg, binary, typ string }) bool { return r.pkg == rel })
}

func allImports(p *build.Package) []string {
	return slices.Concat(p.Imports, p.TestImports, p.XTestImports)
}

func TestRolesImportNoOtherRole(t *testing.T) {
	for rel, p := range pkgs(t) {
		mayImport := slices.ContainsFunc(mayImportRoles, func(m string) bool { return rel == m || strings.HasPrefix(rel, m+"/") })
		for _, imp := range allImports(p) {
			dep, ok := local(imp)
			if !ok || !isRole(dep) || dep == rel {
				continue
			}
			if !mayImport {
				t.Errorf("%s imports the role package %s: only the binaries, pkg/local and e2e/ may", rel, dep)
			}
		}
		if isRole(rel) {
			for _, imp := range p.Imports {
				if dep, ok := local(imp); ok && (dep == "pkg/local" || dep == "pkg/startup" || dep == "pkg/natsd") {
					t.Errorf("role %s imports %s: roles get their process set-up and servers from the caller", rel, dep)
				}
			}
		}
	}
}

func TestConfigImportsNoTransportOrStore(t *testing.T) {
	p := pkgs(t)["pkg/config"]
	if p == nil {
		t.Fatal("no pkg/config")
	}
	for _, imp := range p.Imports {
		if _, ok := local(imp); ok {
			t.Errorf("pkg/config imports %s: the run config is a leaf of the module", imp)
		}
		for _, banned := range []string{"nats", "minio", "raft", "aws"} {
			if strings.Contains(imp, banned) {
				t.Errorf("pkg/config imports %s", imp)
			}
		}
	}
}

// The worker binaries are what an operator scales out: they must not carry the coordinator's
// raft, the NATS server or the trainer.
func TestWorkerBinariesLinkNoServerOrTrainer(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	banned := []string{
		"github.com/hashicorp/raft", "github.com/hashicorp/raft-boltdb/v2", "github.com/nats-io/nats-server/v2/server",
		module + "/pkg/trainer", module + "/pkg/grpo", module + "/pkg/pretrain", module + "/pkg/runstate",
		module + "/pkg/coordinator", module + "/pkg/learner", module + "/pkg/natsd",
	}
	for _, bin := range []string{"./rollout-worker", "./reward-worker"} {
		cmd := exec.Command("go", "list", "-deps", bin)
		cmd.Dir = root(t)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", bin, err)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s: %d packages, want the whole closure", bin, len(deps))
		}
		for _, b := range banned {
			if slices.Contains(deps, b) {
				t.Errorf("%s links %s", bin, b)
			}
		}
	}
}

// Each role has one constructor, New(ctx, Deps, config.Config), and both its binary and laptop
// mode build it with that constructor.
func TestOneConstructorPerRoleUsedByBinaryAndLaptopMode(t *testing.T) {
	r := root(t)
	for _, role := range roles {
		fset := token.NewFileSet()
		var ctors []*ast.FuncDecl
		for _, f := range parseDir(t, fset, filepath.Join(r, role.pkg)) {
			for _, d := range f.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok || fn.Recv != nil || !fn.Name.IsExported() || fn.Type.Results == nil {
					continue
				}
				for _, res := range fn.Type.Results.List {
					if st, ok := res.Type.(*ast.StarExpr); ok {
						if id, ok := st.X.(*ast.Ident); ok && id.Name == role.typ {
							ctors = append(ctors, fn)
						}
					}
				}
			}
		}
		if len(ctors) != 1 || ctors[0].Name.Name != "New" {
			names := []string{}
			for _, c := range ctors {
				names = append(names, c.Name.Name)
			}
			t.Errorf("%s: constructors of *%s %v, want exactly New", role.pkg, role.typ, names)
			continue
		}
		if got := paramTypes(ctors[0]); !slices.Equal(got, []string{"context.Context", "Deps", "config.Config"}) {
			t.Errorf("%s.New takes %v, want (context.Context, Deps, config.Config)", role.pkg, got)
		}
		name := filepath.Base(role.pkg)
		for _, caller := range []string{role.binary, "pkg/local"} {
			if !calls(t, filepath.Join(r, caller), name, "New") {
				t.Errorf("%s does not build the role with %s.New", caller, name)
			}
		}
	}
}

func parseDir(t *testing.T, fset *token.FileSet, dir string) []*ast.File {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

func paramTypes(fn *ast.FuncDecl) []string {
	var out []string
	for _, p := range fn.Type.Params.List {
		s := exprString(p.Type)
		n := max(len(p.Names), 1)
		for range n {
			out = append(out, s)
		}
	}
	return out
}

func exprString(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return exprString(x.X) + "." + x.Sel.Name
	case *ast.StarExpr:
		return "*" + exprString(x.X)
	}
	return "?"
}

// calls reports whether any non-test file in dir calls pkg.fn.
func calls(t *testing.T, dir, pkg, fn string) bool {
	t.Helper()
	found := false
	for _, f := range parseDir(t, token.NewFileSet(), dir) {
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == fn {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == pkg {
					found = true
				}
			}
			return !found
		})
	}
	return found
}
