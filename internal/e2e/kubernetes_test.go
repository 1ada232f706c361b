//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/opsassets"
)

// The collector configuration of the Kubernetes manifests passes the built
// collector's own validation (every component, not only the receiver) as
// each replica would run it, and an ordinal outside the shard count fails.
func TestKubernetesConfigValidates(t *testing.T) {
	bin := collectorBinary(t)
	ms, err := opsassets.ReadManifests(filepath.Join("..", "..", "deploy", "kubernetes"))
	require.NoError(t, err)
	cm, ok := opsassets.Find(ms, "ConfigMap", "otelcol-emailqos-config")
	require.True(t, ok)
	sts, ok := opsassets.Find(ms, "StatefulSet", "otelcol-emailqos")
	require.True(t, ok)
	require.NotNil(t, sts.Spec.Replicas)
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o600))

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHARD_INDEX=") {
			env = append(env, kv)
		}
	}
	for _, m := range exampleEnvRef.FindAllStringSubmatch(cm.Data["config.yaml"], -1) {
		if m[1] != "SHARD_INDEX" { // each run below sets it, or not
			env = append(env, m[1]+"=dummy-"+strings.ToLower(m[1]))
		}
	}
	for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom == nil {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	run := func(extra ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "validate", "--config", path)
		cmd.Env = append(env, extra...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	validate := func(index int) (string, error) { return run("SHARD_INDEX=" + strconv.Itoa(index)) }
	for i := range *sts.Spec.Replicas {
		out, err := validate(i)
		assert.NoError(t, err, "replica %d: otelcol-emailqos validate:\n%s", i, out)
	}
	out, err := validate(*sts.Spec.Replicas)
	assert.Error(t, err, "an ordinal outside the shard count is refused")
	assert.Contains(t, out, "receivers::emailqos::shard: index: ")
	// A pod without the ordinal label (before Kubernetes 1.28) is refused
	// too, rather than taking shard 0's targets.
	out, err = run()
	assert.Error(t, err, "no SHARD_INDEX is refused")
	assert.Contains(t, out, "receivers::emailqos::shard: index: missing or empty")
}
