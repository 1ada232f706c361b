package emailqosreceiver

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// TestErrorTypesDocumented: every error type the engine can set is listed
// in the error.type description of metadata.yaml (so in documentation.md)
// (exactly that set), and has a row in README.md's and TROUBLESHOOTING.md's
// error-type tables.
func TestErrorTypesDocumented(t *testing.T) {
	known := map[string]bool{}
	for _, typ := range steps.Types {
		known[typ] = true
	}
	meta, err := os.ReadFile("metadata.yaml")
	require.NoError(t, err)
	desc := regexp.MustCompile(`(?m)^  error\.type:\n    description: (.*)$`).FindSubmatch(meta)
	require.NotNil(t, desc, "error.type in metadata.yaml")
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllSubmatch(desc[1], -1) {
		listed[string(m[1])] = true
	}
	assert.Equal(t, known, listed, "metadata.yaml error.type description")

	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|")
	for _, doc := range []string{"README.md", "TROUBLESHOOTING.md"} {
		b, err := os.ReadFile(doc)
		require.NoError(t, err)
		rows := map[string]bool{}
		for _, m := range row.FindAllSubmatch(b, -1) {
			rows[string(m[1])] = true
		}
		for typ := range known {
			assert.True(t, rows[typ], "%s has no row for %q", doc, typ)
		}
	}
}
