package emailqosreceiver

import (
	"fmt"
	"hash/fnv"

	"go.opentelemetry.io/collector/confmap"

	"github.com/emailqos/emailqosreceiver/internal/probe"
)

// ShardConfig splits the targets of one configuration among the replicas of
// a fleet: each replica keeps the targets whose name hashes to its index, as
// Prometheus' hashmod relabelling shards scrape targets. Every replica runs
// the same configuration with its own index (usually `${env:SHARD_INDEX}`,
// the pod's ordinal), so each target is probed by exactly one of them.
type ShardConfig struct {
	// Count is the number of replicas (1: no sharding).
	Count int `mapstructure:"count"`
	// Index is this replica's share, in [0, Count).
	Index int `mapstructure:"index"`

	// noIndex: the configuration shards (count above 1) but gives no index,
	// or an empty one, as `${env:SHARD_INDEX}` becomes when the variable is
	// not set. Decoded alone it would be 0, and every such replica would
	// probe shard 0's targets while the others' went unprobed.
	noIndex bool

	// prevent unkeyed literal initialization
	_ struct{}
}

// Unmarshal decodes the shard and notes a missing or empty index.
func (sc *ShardConfig) Unmarshal(conf *confmap.Conf) error {
	type plain ShardConfig // without this method, so no recursion
	if err := conf.Unmarshal((*plain)(sc)); err != nil {
		return err
	}
	v := conf.Get("index")
	sc.noIndex = sc.Count > 1 && (v == nil || v == "")
	return nil
}

// Validate checks the count and this replica's index.
func (sc ShardConfig) Validate() error {
	if sc.Count < 1 {
		return fmt.Errorf("count: %d must be at least 1", sc.Count)
	}
	if sc.noIndex {
		return fmt.Errorf("index: missing or empty: with shard::count %d each replica needs its own index (e.g. ${env:SHARD_INDEX}, the pod's ordinal; is the variable set?)", sc.Count)
	}
	if sc.Index < 0 || sc.Index >= sc.Count {
		return fmt.Errorf("index: %d is outside [0, %d) for shard::count %d", sc.Index, sc.Count, sc.Count)
	}
	return nil
}

// shardOf is the replica a target belongs to: FNV-1a (64 bits) of its name
// (the round-trip name, or the transit direction such as gmail:o365) modulo
// the count. The hash depends on the name alone, so every replica computes
// the same assignment, and it stays the same from one start to the next.
func shardOf(name string, count int) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return int(h.Sum64() % uint64(count))
}

// owns reports whether this replica probes the target named name.
func (sc ShardConfig) owns(name string) bool {
	return sc.Count <= 1 || shardOf(name, sc.Count) == sc.Index
}

// shardTargets keeps this replica's targets. A target lives in one replica
// only, so its late-probe list stays there; the orphan sweep of a mailbox
// that targets of several replicas read runs in each of them, which is safe
// (see sweep in internal/probe: only probes older than orphan_age are swept).
func (sc ShardConfig) shardTargets(targets []*probe.Target) []*probe.Target {
	if sc.Count <= 1 {
		return targets
	}
	var kept []*probe.Target
	for _, t := range targets {
		if sc.owns(t.Name) {
			kept = append(kept, t)
		}
	}
	return kept
}
