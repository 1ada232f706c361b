package emailqosreceiver

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/metadata"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// The engine's names become metric attributes only through metadata.yaml's
// enums: record() drops a step, method or protocol that the generated maps do
// not know. These tests read the engine's constants from its source, so a
// name added on either side alone fails here instead of vanishing from the
// metrics.

// stringConsts returns the string constants declared in the Go files of dir
// for which keep (given the constant's name and declared type, "" when
// untyped) is true.
func stringConsts(t *testing.T, dir string, keep func(name, typ string) bool) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	require.NoError(t, err)
	var out []string
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		require.NoError(t, err)
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				typ := ""
				if id, ok := vs.Type.(*ast.Ident); ok {
					typ = id.Name
				}
				for i, name := range vs.Names {
					if i >= len(vs.Values) || !keep(name.Name, typ) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					require.NoError(t, err)
					out = append(out, v)
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestEngineNamesMatchMetadata(t *testing.T) {
	// Steps: every constant of internal/steps whose value is protocol.step.
	stepName := regexp.MustCompile(`^[a-z0-9]+\.[a-z_]+$`)
	var engineSteps []string
	for _, v := range stringConsts(t, "internal/steps", func(_, typ string) bool { return typ == "" }) {
		if stepName.MatchString(v) {
			engineSteps = append(engineSteps, v)
		}
	}
	require.NotEmpty(t, engineSteps)
	assert.Equal(t, engineSteps, sortedKeys(metadata.MapAttributeStep), "internal/steps step names vs metadata.yaml attribute `step`")

	// Protocols are the steps' prefixes, but for the API transports (graph,
	// gmailapi), whose HTTPS handshakes net/http makes and no TLS metric
	// reports.
	var protocols []string
	for _, s := range engineSteps {
		if p, _, _ := strings.Cut(s, "."); p != "delivery" && p != "graph" && p != "gmailapi" {
			protocols = append(protocols, p)
		}
	}
	slices.Sort(protocols)
	assert.Equal(t, slices.Compact(protocols), sortedKeys(metadata.MapAttributeProtocol), "step protocols vs metadata.yaml attribute `protocol`")

	// Detection methods reported with a delivery (auto is a choice, not a
	// method that sees an arrival).
	methods := stringConsts(t, "internal/imapwatch", func(_, typ string) bool { return typ == "Method" })
	methods = slices.DeleteFunc(methods, func(m string) bool { return m == "auto" })
	assert.Equal(t, methods, sortedKeys(metadata.MapAttributeMethod), "imapwatch methods vs metadata.yaml attribute `method`")

	// Delivery segments along the Received chain.
	segments := stringConsts(t, "internal/received", func(_, typ string) bool { return typ == "Segment" })
	assert.Equal(t, segments, sortedKeys(metadata.MapAttributeSegment), "received segments vs metadata.yaml attribute `segment`")
}

// TestErrorTypesListed checks that steps.Types, the set the documentation
// test (TestErrorTypesDocumented) walks, holds every Type* constant.
func TestErrorTypesListed(t *testing.T) {
	types := stringConsts(t, "internal/steps", func(name, _ string) bool { return strings.HasPrefix(name, "Type") })
	types = slices.DeleteFunc(types, func(s string) bool { return s == "" })
	require.NotEmpty(t, types)
	listed := slices.Clone(steps.Types)
	slices.Sort(listed)
	assert.Equal(t, types, listed, "internal/steps Type* constants vs steps.Types")
}
