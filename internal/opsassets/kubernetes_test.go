package opsassets

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/emailqos/emailqosreceiver"
)

const (
	fleetName      = "otelcol-emailqos"
	fleetConfigMap = "otelcol-emailqos-config"
)

// fleet reads deploy/kubernetes and returns the StatefulSet, its collector
// container and the collector configuration of the ConfigMap it mounts.
func fleet(t *testing.T) (ms []Manifest, sts Manifest, c Container, config string) {
	t.Helper()
	ms, err := ReadManifests(filepath.Join(root, "deploy", "kubernetes"))
	require.NoError(t, err)
	sts, ok := Find(ms, "StatefulSet", fleetName)
	require.True(t, ok, "a StatefulSet %s", fleetName)
	require.Len(t, sts.Spec.Template.Spec.Containers, 1)
	c = sts.Spec.Template.Spec.Containers[0]
	cm, ok := Find(ms, "ConfigMap", fleetConfigMap)
	require.True(t, ok, "a ConfigMap %s", fleetConfigMap)
	config = cm.Data["config.yaml"]
	require.NotEmpty(t, config)
	return ms, sts, c, config
}

// literalEnv is the container's env with literal values.
func literalEnv(c Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

func TestKubernetesManifestsParse(t *testing.T) {
	ms, _, _, _ := fleet(t)
	var kinds []string
	for _, m := range ms {
		kinds = append(kinds, m.Kind)
	}
	for _, k := range []string{"Namespace", "ConfigMap", "Secret", "Service", "StatefulSet"} {
		assert.Contains(t, kinds, k)
	}
}

// The pieces of the StatefulSet agree with each other, with the image and
// with the collector configuration.
func TestKubernetesStatefulSet(t *testing.T) {
	ms, sts, c, config := fleet(t)
	spec := sts.Spec.Template.Spec
	require.NotNil(t, sts.Spec.Replicas)
	env := literalEnv(c)

	// Sharding: the count is the replicas, the index the pod's ordinal.
	assert.Equal(t, strconv.Itoa(*sts.Spec.Replicas), env["SHARD_COUNT"], "SHARD_COUNT must equal spec.replicas")
	var indexRef string
	for _, e := range c.Env {
		if e.Name == "SHARD_INDEX" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			indexRef = e.ValueFrom.FieldRef.FieldPath
		}
	}
	assert.Equal(t, "metadata.labels['apps.kubernetes.io/pod-index']", indexRef)
	_, ok := Find(ms, "Service", sts.Spec.ServiceName)
	assert.True(t, ok, "the StatefulSet's serviceName %q is a Service", sts.Spec.ServiceName)

	// The image's user (packaging/Containerfile: USER 10001), never root.
	require.NotNil(t, spec.SecurityContext.RunAsNonRoot)
	assert.True(t, *spec.SecurityContext.RunAsNonRoot)
	require.NotNil(t, spec.SecurityContext.RunAsUser)
	assert.Equal(t, 10001, *spec.SecurityContext.RunAsUser)
	containerfile, err := os.ReadFile(filepath.Join(root, "packaging", "Containerfile"))
	require.NoError(t, err)
	assert.Contains(t, string(containerfile), "\nUSER 10001:10001\n")

	// The configuration is the mounted ConfigMap, at the image's default path.
	var cmVolume string
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == fleetConfigMap {
			cmVolume = v.Name
		}
	}
	require.NotEmpty(t, cmVolume, "a volume of ConfigMap %s", fleetConfigMap)
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || (m.Name == cmVolume && m.MountPath == "/etc/otelcol-emailqos")
	}
	assert.True(t, mounted, "the ConfigMap is mounted at /etc/otelcol-emailqos")
	assert.Equal(t, []string{"--config", "/etc/otelcol-emailqos/config.yaml"}, c.Args)

	// Liveness and readiness ask the health_check extension, on its port.
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for name, p := range map[string]*Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		require.NotNil(t, p, name)
		require.NotNil(t, p.HTTPGet, name)
		assert.Equal(t, 13133, ports[p.HTTPGet.Port], "%s probe port", name)
	}
	var cfg struct {
		Extensions struct {
			HealthCheck struct {
				Endpoint string `yaml:"endpoint"`
			} `yaml:"health_check"`
		} `yaml:"extensions"`
		Processors struct {
			MemoryLimiter struct {
				LimitMiB int `yaml:"limit_mib"`
			} `yaml:"memory_limiter"`
		} `yaml:"processors"`
		Exporters struct {
			Prometheus struct {
				Endpoint string `yaml:"endpoint"`
			} `yaml:"prometheus"`
		} `yaml:"exporters"`
		Service struct {
			Extensions []string `yaml:"extensions"`
			Pipelines  map[string]struct {
				Processors []string `yaml:"processors"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(config), &cfg))
	assert.True(t, strings.HasSuffix(cfg.Extensions.HealthCheck.Endpoint, ":13133"))
	assert.Contains(t, cfg.Service.Extensions, "health_check")
	assert.True(t, strings.HasSuffix(cfg.Exporters.Prometheus.Endpoint, ":"+strconv.Itoa(ports["metrics"])))
	assert.Contains(t, cfg.Service.Pipelines["metrics"].Processors, "resource/site", "the vantage point is added")

	// Limits: the memory limiter acts below the container's memory limit.
	mem := c.Resources.Limits["memory"]
	require.True(t, strings.HasSuffix(mem, "Mi"), "memory limit %q in Mi", mem)
	limit, err := strconv.Atoi(strings.TrimSuffix(mem, "Mi"))
	require.NoError(t, err)
	assert.Less(t, cfg.Processors.MemoryLimiter.LimitMiB, limit)
	assert.NotEmpty(t, c.Resources.Requests["cpu"])
	assert.NotEmpty(t, c.Resources.Limits["cpu"])
}

// Every ${env:...} of the collector configuration is given by the
// StatefulSet (literally, or from the pod) or by the Secret, and secrets
// come from the Secret only.
func TestKubernetesEnvironment(t *testing.T) {
	ms, _, c, config := fleet(t)
	given := map[string]string{}
	for _, e := range c.Env {
		given[e.Name] = "statefulset"
	}
	var secretNames []string
	for _, ef := range c.EnvFrom {
		if ef.SecretRef == nil {
			continue
		}
		secretNames = append(secretNames, ef.SecretRef.Name)
		secret, ok := Find(ms, "Secret", ef.SecretRef.Name)
		require.True(t, ok, "the Secret %s the container reads", ef.SecretRef.Name)
		for k := range secret.StringData {
			given[k] = "secret"
		}
		for k := range secret.Data {
			given[k] = "secret"
		}
	}
	require.NotEmpty(t, secretNames, "credentials come from a Secret")
	for _, m := range envRef.FindAllStringSubmatch(config, -1) {
		assert.Contains(t, given, m[1], "${env:%s} of the ConfigMap is set by the StatefulSet or the Secret", m[1])
	}
	for _, m := range secretLiteral.FindAllStringSubmatch(config, -1) {
		t.Errorf("%s is a literal (%q): use ${env:VAR} from the Secret", m[1], m[2])
	}
	for _, v := range []string{"GMAIL_PASSWORD", "O365_CLIENT_SECRET", "EMAILQOS_PROBE_SECRET"} {
		assert.Equal(t, "secret", given[v], v)
	}
}

// The embedded configuration loads and validates in every replica, and the
// replicas' shards together hold every target exactly once.
func TestKubernetesShards(t *testing.T) {
	_, sts, c, config := fleet(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(config), 0o600))
	for _, m := range envRef.FindAllStringSubmatch(config, -1) {
		t.Setenv(m[1], "dummy-"+m[1])
	}
	for k, v := range literalEnv(c) {
		t.Setenv(k, v)
	}

	replicas := *sts.Spec.Replicas
	owner := map[string]int{}
	for i := range replicas {
		t.Setenv("SHARD_INDEX", strconv.Itoa(i))
		cfg, _, err := emailqosreceiver.LoadCollectorConfig(context.Background(), path, "")
		require.NoError(t, err, "replica %d", i)
		names, err := emailqosreceiver.TargetNames(context.Background(), cfg)
		require.NoError(t, err)
		for _, n := range names {
			prev, dup := owner[n]
			assert.False(t, dup, "%s in replicas %d and %d", n, prev, i)
			owner[n] = i
		}
	}
	// 3 round trips and the 6 directions of a 3-account mesh.
	assert.Len(t, owner, 9)
	var shards []int
	for _, i := range owner {
		shards = append(shards, i)
	}
	slices.Sort(shards)
	assert.Len(t, slices.Compact(shards), replicas, "every replica has targets")

	// A replica whose ordinal is outside the count is refused, by name.
	t.Setenv("SHARD_INDEX", strconv.Itoa(replicas))
	_, _, err := emailqosreceiver.LoadCollectorConfig(context.Background(), path, "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "shard: index: ")
}
