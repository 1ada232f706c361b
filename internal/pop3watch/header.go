package pop3watch

import (
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"strings"
)

// probeTokenPrefix starts every probe token (see probemsg). It only selects
// what FindProbes considers; what makes a message a probe is accept.
const probeTokenPrefix = "eq"

func isProbeToken(v string) bool {
	return strings.HasPrefix(v, probeTokenPrefix) && probemsg.Searchable(v)
}
