package opsassets

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver"
)

// envRef matches ${env:VAR}, ${VAR} and ${env:VAR:-default}.
var envRef = regexp.MustCompile(`\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}`)

// secretLiteral matches a secret field set to anything but a reference.
var secretLiteral = regexp.MustCompile(`(?m)^\s*(password|client_secret|refresh_token|probe_secret):\s*([^$\s#][^#\n]*)$`)

func examples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "examples", "*.yaml"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 8, "demo and the seven operator examples")
	return files
}

// Every example's emailqos receiver unmarshals onto the factory's defaults
// and validates, with dummy values for the environment it reads.
func TestExamplesValidate(t *testing.T) {
	for _, file := range examples(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			require.NoError(t, err)
			for _, m := range envRef.FindAllStringSubmatch(string(raw), -1) {
				v := "dummy-" + m[1]
				if strings.HasSuffix(m[1], "_FILE") {
					// A path the validation checks exists.
					v = filepath.Join(t.TempDir(), "key.json")
					require.NoError(t, os.WriteFile(v, []byte("{}"), 0o600))
				}
				t.Setenv(m[1], v)
			}
			cfg, id, err := emailqosreceiver.LoadCollectorConfig(context.Background(), file, "")
			require.NoError(t, err)
			assert.Equal(t, "emailqos", id)
			names, err := emailqosreceiver.TargetNames(context.Background(), cfg)
			require.NoError(t, err)
			assert.NotEmpty(t, names)

			if filepath.Base(file) != "demo.yaml" {
				for _, m := range secretLiteral.FindAllStringSubmatch(string(raw), -1) {
					t.Errorf("%s is a literal (%q): use ${env:VAR}", m[1], m[2])
				}
			}
		})
	}
}

func TestTransitMeshExample(t *testing.T) {
	file := filepath.Join(root, "examples", "transit-mesh.yaml")
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	for _, m := range envRef.FindAllStringSubmatch(string(raw), -1) {
		t.Setenv(m[1], "dummy")
	}
	cfg, _, err := emailqosreceiver.LoadCollectorConfig(context.Background(), file, "")
	require.NoError(t, err)
	names, err := emailqosreceiver.TargetNames(context.Background(), cfg)
	require.NoError(t, err)
	assert.Len(t, names, 4+12, "four round trips and every direction between four accounts")
}

// The packages' default configuration validates with the packaged
// environment file, as the service would start with it.
func TestPackagedDefaultConfig(t *testing.T) {
	env, err := os.ReadFile(filepath.Join(root, "packaging", "otelcol-emailqos.conf"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(env), "\n") {
		name, value, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		t.Setenv(name, strings.Trim(value, `"`))
	}
	cfg, _, err := emailqosreceiver.LoadCollectorConfig(context.Background(), filepath.Join(root, "packaging", "config.yaml"), "")
	require.NoError(t, err)
	names, err := emailqosreceiver.TargetNames(context.Background(), cfg)
	require.NoError(t, err)
	assert.Equal(t, []string{"mail"}, names)
}
