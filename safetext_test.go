package emailqosreceiver

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
)

// TestLogFieldsEscapeServerText: a server's refusal text carrying an ESC
// sequence, a BEL, a C1 control and a bidi override reaches the receiver's
// "probe failed" log entry (error and transcript fields) as escapes only.
func TestLogFieldsEscapeServerText(t *testing.T) {
	fx := newFixture(t, fixtureOptions{})
	hostile := "NO [ALERT] \x1b[2K\x1b[1Aresult: OK\a \u009b31m \u202eKO"
	require.NoError(t, fx.mbox.Set(faultnet.Fault{
		Client: replaceLine(rx(`(?i)^(\S+) LOGIN .*\n$`), "$1 LOGIN alice@a.test wrong-password\r\n"),
		Server: replaceLine(rx(`^(T\d+) NO .*`), "$1 "+hostile+"\r"),
	}))
	fx.cfg.Transcript.Targets = []string{"*"}
	_, logs := scrapeLogged(t, fx.cfg)
	failed := logs.FilterMessage("probe failed").All()
	require.NotEmpty(t, failed)
	seen := false
	for _, e := range failed {
		var all strings.Builder
		for k, v := range e.ContextMap() {
			all.WriteString(k + "=" + strings.TrimSpace(strings.ReplaceAll(fmtAny(v), "\n", " ")) + "\n")
		}
		text := all.String()
		for _, bad := range []string{"\x1b", "\a", "\u009b", "\u202e"} {
			assert.NotContains(t, text, bad)
		}
		seen = seen || strings.Contains(text, `\x1b[2K\x1b[1Aresult: OK\x07`)
	}
	assert.True(t, seen, "the server's text, escaped, is in the log: %v", failed)
}

func fmtAny(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		var parts []string
		for _, p := range x {
			parts = append(parts, fmtAny(p))
		}
		return strings.Join(parts, " ")
	}
	return ""
}
