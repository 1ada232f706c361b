package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// costTarget is the CPU budget of one probe.
const costTarget = 3.0 // ms

// cost summarises `go test -bench BenchmarkProbe` output (several -count
// runs) as the median of each metric per case.
func cost(args []string, out io.Writer) error {
	// values[case][servers][unit] = samples
	values := map[string]map[string]map[string][]float64{}
	var order []string
	for _, name := range args {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || !strings.HasPrefix(fields[0], "BenchmarkProbe/") {
				continue
			}
			full := strings.TrimPrefix(fields[0], "BenchmarkProbe/")
			if i := strings.LastIndexByte(full, '-'); i > 0 {
				full = full[:i] // -GOMAXPROCS
			}
			c, servers, _ := strings.Cut(full, "/servers=")
			if values[c] == nil {
				values[c] = map[string]map[string][]float64{}
				order = append(order, c)
			}
			if values[c][servers] == nil {
				values[c][servers] = map[string][]float64{}
			}
			for i := 2; i+1 < len(fields); i += 2 {
				v, err := strconv.ParseFloat(fields[i], 64)
				if err == nil {
					values[c][servers][fields[i+1]] = append(values[c][servers][fields[i+1]], v)
				}
			}
		}
		f.Close()
	}
	if len(order) == 0 {
		return fmt.Errorf("no BenchmarkProbe results in %v", args)
	}
	median := func(c, servers, unit string) float64 {
		v := slices.Clone(values[c][servers][unit])
		if len(v) == 0 {
			return 0
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	fmt.Fprintln(out, "Medians of the runs above. CPU is process CPU time (user+system) per probe; "+
		"\"client\" is the probing process alone (servers in a child process), \"all\" has the servers in the same process.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| case | wall ms/op | CPU ms/op, all | CPU ms/op, client | CPU ms/op, servers | client B/op | client allocs/op | client < 3 ms |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---|")
	for _, c := range order {
		client := median(c, "child", "cpu-ms/op")
		verdict := "yes"
		if client >= costTarget {
			verdict = fmt.Sprintf("**no** (+%.0f%%)", 100*(client/costTarget-1))
		}
		fmt.Fprintf(out, "| %s | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | %s |\n", c,
			median(c, "inproc", "ns/op")/1e6, median(c, "inproc", "cpu-ms/op"), client,
			median(c, "child", "server-cpu-ms/op"), median(c, "child", "B/op"), median(c, "child", "allocs/op"), verdict)
	}
	return nil
}

// machine describes the machine the figures were taken on.
func machine(out io.Writer) error {
	model, mem := "unknown", "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				mem = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(b))
	}
	fmt.Fprintln(out, "| | |")
	fmt.Fprintln(out, "|---|---|")
	fmt.Fprintf(out, "| CPU | %s |\n", model)
	fmt.Fprintf(out, "| cores | %d |\n", runtime.NumCPU())
	fmt.Fprintf(out, "| RAM | %s |\n", mem)
	fmt.Fprintf(out, "| kernel | %s |\n", kernel)
	fmt.Fprintf(out, "| Go | %s %s/%s |\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(out, "| date | %s |\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	return nil
}
