package probe

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A target that misses every probe for months keeps a bounded list of late
// probes: capped at maxOutstanding, and emptied of those older than the
// orphan age, which the sweep takes over.
func TestLateListIsBounded(t *testing.T) {
	tgt := &Target{OrphanAge: time.Hour}
	start := time.Now().Add(-90 * 24 * time.Hour)
	for i := range 10 * maxOutstanding {
		tgt.remember(lateProbe{token: fmt.Sprint(i), sentAt: start.Add(time.Duration(i) * time.Minute)})
		require.LessOrEqual(t, len(tgt.late), maxOutstanding)
	}
	// The newest are kept, the oldest gave way.
	assert.Equal(t, fmt.Sprint(10*maxOutstanding-1), tgt.late[len(tgt.late)-1].token)
	assert.Equal(t, fmt.Sprint(9*maxOutstanding), tgt.late[0].token)

	// Every remembered probe is older than the orphan age now.
	assert.Empty(t, tgt.outstanding(time.Now()))
	assert.Empty(t, tgt.late)

	// Within the orphan age, only those count.
	now := time.Now()
	for i := range 120 {
		tgt.remember(lateProbe{token: fmt.Sprint(i), sentAt: now.Add(-time.Duration(119-i)*time.Minute - 30*time.Second)})
	}
	assert.Len(t, tgt.outstanding(now), 60, "sent within the last hour")
}
