package integration

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLayout keeps the data flow one way: confluent-kafka-go only
// under internal/ (plus the tests, examples and launchers that play outside clients), no
// public package importing another it must not, nothing importing integration/ from
// outside it; integration/harness, which the suites and the bench share, judges from
// outside the framework (no processor, no distributed) and is there.
func TestLayout(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "github.com/samsa-go/samsa/...")
	out, err := cmd.Output()
	require.NoError(t, err)
	const mod = "github.com/samsa-go/samsa/"
	type pkg struct {
		ImportPath string
		Imports    []string
	}
	forbidden := map[string][]string{
		"processor":   {mod + "distributed", mod + "state", mod + "metrics", mod + "examples"},
		"distributed": {mod + "processor", mod + "state", mod + "examples"},
		"state":       {mod + "processor", mod + "distributed", mod + "examples"},
		"metrics":     {mod + "processor", mod + "distributed", mod + "state", mod + "examples"},
		"internal":    {mod + "processor", mod + "distributed", mod + "state", mod + "metrics", mod + "examples"},
		"samsatest":   {mod + "examples"},
		"codec":       {mod + "processor", mod + "distributed", mod + "state", mod + "metrics", mod + "internal", mod + "examples"},
		"cmd":         {mod + "examples"},
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	n, harnessSeen := 0, false
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else {
			require.NoError(t, err)
		}
		n++
		rel := strings.TrimPrefix(p.ImportPath, mod)
		top := strings.SplitN(rel, "/", 2)[0]
		if rel == "integration/harness" {
			harnessSeen = true
			for _, imp := range p.Imports {
				for _, f := range []string{mod + "processor", mod + "distributed"} {
					assert.False(t, imp == f || strings.HasPrefix(imp, f+"/"), "integration/harness imports %s: it checks from outside the framework", imp)
				}
			}
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "github.com/confluentinc/confluent-kafka-go") {
				// The one exception: codec/registry wraps the client's schema-registry serdes
				// (never its Kafka client) behind samsa's own types; its API has no
				// confluent-kafka-go type in it.
				if rel == "codec/registry" && strings.HasPrefix(imp, "github.com/confluentinc/confluent-kafka-go/v2/schemaregistry") {
					continue
				}
				assert.Contains(t, []string{"internal", "integration", "examples"}, top,
					"%s imports confluent-kafka-go: public packages expose samsa's own types", p.ImportPath)
			}
			if top != "integration" {
				assert.False(t, strings.HasPrefix(imp, mod+"integration"), "%s imports %s", p.ImportPath, imp)
			}
			if rel == "processor" {
				assert.NotEqual(t, mod+"processor/topics", imp, "processor must not import processor/topics: the producer and topic creation stand on processor, not the other way")
			}
			for _, f := range forbidden[top] {
				bad := imp == f || strings.HasPrefix(imp, f+"/")
				assert.False(t, bad, "%s must not import %s (imports point down only: examples → public packages → codec, internal)", p.ImportPath, imp)
			}
		}
	}
	require.Greater(t, n, 5, "go list found too few packages")
	assert.True(t, harnessSeen, "go list did not list integration/harness")
}

// TestDocMapsTheTree keeps doc.go, the map of this directory, true: it names every test
// file and every directory here, and every test file, directory, test function and build
// helper it names exists.
func TestDocMapsTheTree(t *testing.T) {
	docBytes, err := os.ReadFile("doc.go")
	require.NoError(t, err)
	doc := string(docBytes)
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	var sources strings.Builder
	for _, e := range entries {
		name := e.Name()
		switch {
		case e.IsDir():
			assert.True(t, regexp.MustCompile(`\b`+regexp.QuoteMeta(name)+`\b`).MatchString(doc), "doc.go does not mention the directory %s/", name)
		case strings.HasSuffix(name, "_test.go"):
			assert.True(t, strings.Contains(doc, name), "doc.go does not mention %s", name)
			src, err := os.ReadFile(name)
			require.NoError(t, err)
			sources.Write(src)
		}
	}
	for _, m := range regexp.MustCompile(`\b[a-z0-9_]+_test\.go\b`).FindAllString(doc, -1) {
		_, err := os.Stat(m)
		assert.NoError(t, err, "doc.go names %s", m)
	}
	for _, m := range regexp.MustCompile(`\b(?:Test[A-Z]\w*|build[A-Z]\w*|goBuild)\b`).FindAllString(doc, -1) {
		assert.True(t, strings.Contains(sources.String(), "func "+m+"("), "doc.go names %s, which no test file here defines", m)
	}
	// The harness: every harness.Name the map mentions is declared there, and the
	// harness's own doc.go names each of its files.
	hdoc, err := os.ReadFile("harness/doc.go")
	require.NoError(t, err)
	files, err := os.ReadDir("harness")
	require.NoError(t, err)
	var hsrc strings.Builder
	for _, f := range files {
		if name := f.Name(); strings.HasSuffix(name, ".go") {
			src, err := os.ReadFile("harness/" + name)
			require.NoError(t, err)
			hsrc.Write(src)
			if name != "doc.go" {
				assert.Contains(t, string(hdoc), name, "harness/doc.go does not mention %s", name)
			}
		}
	}
	for _, m := range regexp.MustCompile(`\bharness\.([A-Z]\w*)`).FindAllStringSubmatch(doc, -1) {
		decl := regexp.MustCompile(`(?m)^(?:func(?: \([^)]*\))?|type) ` + m[1] + `\b`)
		assert.True(t, decl.MatchString(hsrc.String()), "doc.go names harness.%s, which integration/harness does not declare", m[1])
	}
	for _, dir := range regexp.MustCompile(`integration/([a-z]+)`).FindAllStringSubmatch(doc, -1) {
		_, err := os.Stat(dir[1])
		assert.NoError(t, err, "doc.go names integration/%s", dir[1])
	}
}

// TestNoPackageLevelMutableState: no non-test, non-generated file of the module keeps a
// map or a function in a package-level variable (a hidden hook or shared table any caller
// could change): such values are returned by functions or live in a struct. Checked by
// syntax: a var of map or func type, a map or func literal, make(map...), or a composite
// literal of a map type the module declares.
func TestNoPackageLevelMutableState(t *testing.T) {
	out, err := exec.Command("git", "-C", "..", "ls-files", "*.go").Output()
	require.NoError(t, err)
	fset := token.NewFileSet()
	var files []*ast.File
	mapTypes := map[string]bool{} // "pkg.Type" and "Type" of map types the module declares
	for _, name := range strings.Fields(string(out)) {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join("..", name), nil, parser.ParseComments)
		require.NoError(t, err)
		if ast.IsGenerated(f) {
			continue
		}
		files = append(files, f)
		for _, d := range f.Decls {
			if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.TYPE {
				for _, s := range g.Specs {
					if ts := s.(*ast.TypeSpec); isMapOrFunc(ts.Type) {
						mapTypes[f.Name.Name+"."+ts.Name.Name] = true
					}
				}
			}
		}
	}
	require.NotEmpty(t, files)
	for _, f := range files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				bad := isMapOrFunc(vs.Type)
				for _, v := range vs.Values {
					bad = bad || mutableValue(v, f.Name.Name, mapTypes)
				}
				for _, n := range vs.Names {
					assert.False(t, bad && n.Name != "_", "%s: package-level variable %s holds a map or a function: return it from a function instead",
						fset.Position(n.Pos()), n.Name)
				}
			}
		}
	}
}

func isMapOrFunc(e ast.Expr) bool {
	switch e.(type) {
	case *ast.MapType, *ast.FuncType:
		return true
	}
	return false
}

func mutableValue(e ast.Expr, pkg string, mapTypes map[string]bool) bool {
	switch v := e.(type) {
	case *ast.FuncLit:
		return true
	case *ast.CompositeLit:
		switch t := v.Type.(type) {
		case *ast.MapType:
			return true
		case *ast.Ident:
			return mapTypes[pkg+"."+t.Name]
		case *ast.SelectorExpr:
			if x, ok := t.X.(*ast.Ident); ok {
				return mapTypes[x.Name+"."+t.Sel.Name]
			}
		}
	case *ast.CallExpr:
		if id, ok := v.Fun.(*ast.Ident); ok && id.Name == "make" && len(v.Args) > 0 {
			return isMapOrFunc(v.Args[0])
		}
	}
	return false
}
