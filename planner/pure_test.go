package planner

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPlannerIsPure: the planner may not touch the system. It imports
// neither os, syscall, x/sys nor the engine (directly); everything it
// needs comes in the Job and the time it is given.
func TestPlannerIsPure(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	forbidden := map[string]bool{"os": true, "os/exec": true, "syscall": true, "golang.org/x/sys/unix": true,
		"github.com/crtools/crtools/engine": true, "io/ioutil": true, "io/fs": true}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range ast.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if forbidden[p] || strings.HasPrefix(p, "github.com/crtools/crtools/engine/") || strings.HasPrefix(p, "github.com/crtools/crtools/executor") {
				t.Errorf("%s imports %s: the planner must stay pure", f, p)
			}
		}
	}
}
