package pop3watch

import (
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"strings"
)

func isProbeToken(v string) bool {
	return strings.HasPrefix(v, probemsg.TokenPrefix) && probemsg.Searchable(v)
}
