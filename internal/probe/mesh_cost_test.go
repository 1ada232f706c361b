package probe

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

// TestMeshCommandCost measures what one collection of a 10-account mesh
// (90 transit directions and 10 round trips) costs the mail servers: IMAP
// commands per probe and logins per collection, with every probe of the
// collection running at once, as the receiver runs them. The figures are
// logged for BENCHMARKS.md; the bound only catches a regression of the
// order of a command per probe per message.
func TestMeshCommandCost(t *testing.T) {
	const n = 10
	var users []mailtest.User
	for i := range n {
		users = append(users, mailtest.User{Address: fmt.Sprintf("m%d@mesh.test", i), Password: fmt.Sprintf("pw%d", i)})
	}
	srv := startMail(t, mailtest.Options{Users: users, DeliveryDelay: 30 * time.Millisecond})
	accounts := make([]*Account, n)
	for i, u := range users {
		accounts[i] = account(srv, fmt.Sprintf("m%d", i), u.Address, u.Password, "auto")
	}
	collect := func() (commands, probes int) {
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		for _, s := range accounts {
			for _, r := range accounts {
				tg := target(s, r)
				tg.DeliveryTimeout, tg.Timeout = 20*time.Second, 30*time.Second
				wg.Add(1)
				go func() {
					defer wg.Done()
					res := Run(context.Background(), tg, nil)
					require.NoError(t, res.Err, tg.Name)
					mu.Lock()
					commands += res.Commands
					probes++
					mu.Unlock()
				}()
			}
		}
		wg.Wait()
		return commands, probes
	}
	// No sweep (SweepInterval 0). The first collection may learn how each
	// server searches (once per account); the second is the steady state.
	for i := range 2 {
		cmds, probes := collect()
		t.Logf("%d-account mesh, collection %d: %d probes, %d IMAP commands (%.1f per probe), %d IMAP logins and %d SMTP AUTH",
			n, i+1, probes, cmds, float64(cmds)/float64(probes), probes, probes)
		require.LessOrEqual(t, float64(cmds)/float64(probes), 16.0)
	}
}
