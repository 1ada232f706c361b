//go:build race

package probe

// raceEnabled: the race detector distorts timing, so timing assertions of
// tests that also run under it are skipped (make precision runs them).
const raceEnabled = true
