package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCostTakesMediansPerCase(t *testing.T) {
	out := filepath.Join(t.TempDir(), "cost.txt")
	require.NoError(t, os.WriteFile(out, []byte(`goos: linux
BenchmarkProbe/conn=tls/detect=idle/servers=inproc-2   100  3000000 ns/op  4.0 cpu-ms/op  1000 B/op  10 allocs/op
BenchmarkProbe/conn=tls/detect=idle/servers=child-2    100  4000000 ns/op  2.0 cpu-ms/op  2.5 server-cpu-ms/op  500 B/op  5 allocs/op
BenchmarkProbe/conn=tls/detect=idle/servers=child-2    100  4000000 ns/op  3.5 cpu-ms/op  2.5 server-cpu-ms/op  500 B/op  5 allocs/op
BenchmarkProbe/conn=tls/detect=idle/servers=child-2    100  4000000 ns/op  3.1 cpu-ms/op  2.5 server-cpu-ms/op  500 B/op  5 allocs/op
PASS
`), 0o600))
	var buf bytes.Buffer
	require.NoError(t, cost([]string{out}, &buf))
	assert.Contains(t, buf.String(), "| conn=tls/detect=idle | 3.00 | 4.00 | 3.10 | 2.50 | 500 | 5 | **no** (+3%) |")
}

func TestReportRows(t *testing.T) {
	out := filepath.Join(t.TempDir(), "scale.jsonl")
	require.NoError(t, os.WriteFile(out, []byte(
		`{"n":10,"servers":"child","security":"tls","detection":"precise","cores":2,"interval_s":60,"delivered":9,"failed":{"not_found":1},"wall_s":2,"cpu_s":1.2,"peak_rss_mb":20,"err_median_ms":1,"err_p99_ms":2,"err_max_ms":3,"server_cpu_s":0.5,"server_rss_mb":15}`+"\n"), 0o600))
	var buf bytes.Buffer
	require.NoError(t, report([]string{out}, &buf))
	assert.Contains(t, buf.String(), "| 10 | precise | 0 | 9 | 1 not_found | 2.00 | 1.20 | 30.0% | 1.00% | 20 | 1.00 | 2.00 | 3.00 | 0.50 | 15 |")
}
