package emailqosreceiver

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestArchitectureFilesExist keeps ARCHITECTURE.md's "where to look" table
// true when files move: every Go file it names must exist.
func TestArchitectureFilesExist(t *testing.T) {
	raw, err := os.ReadFile("ARCHITECTURE.md")
	require.NoError(t, err)
	_, table, ok := strings.Cut(string(raw), "## Where to look")
	require.True(t, ok)
	files := regexp.MustCompile(`(?m)^\|[^|]+\| ([a-z0-9_/.]+\.go) \|$`).FindAllStringSubmatch(table, -1)
	require.NotEmpty(t, files)
	for _, f := range files {
		_, err := os.Stat(f[1])
		assert.NoError(t, err, "ARCHITECTURE.md names %s", f[1])
	}
}
