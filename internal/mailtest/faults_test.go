package mailtest

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSetFaultsAtRuntime(t *testing.T) {
	s := start(t, Options{})
	c, err := dialSMTP(t, s, plain)
	require.NoError(t, err)
	require.NoError(t, c.Auth(sasl.NewPlainClient("", alice, alicePW)))

	code := func(err error) int {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se.Code
		}
		return 0
	}
	s.SetFaults(Faults{DeferMail: true})
	assert.Equal(t, 451, code(c.Mail(alice, nil)), "on an open session")
	s.SetFaults(Faults{DeferRcpt: true})
	require.NoError(t, c.Mail(alice, nil))
	assert.Equal(t, 450, code(c.Rcpt(bob, nil)))
	s.SetFaults(Faults{RejectRcpt: true})
	assert.Equal(t, 550, code(c.Rcpt(bob, nil)))
	s.SetFaults(Faults{})
	assert.NoError(t, c.Rcpt(bob, nil))
	require.NoError(t, c.Reset())

	s.SetFaults(Faults{RejectAuth: true})
	c2, err := dialSMTP(t, s, plain)
	require.NoError(t, err)
	assert.Equal(t, 535, code(c2.Auth(sasl.NewPlainClient("", alice, alicePW))))
}

func TestGenerateUserMail(t *testing.T) {
	now := time.Now()
	a, b := GenerateUserMail(alice, 40, 3, now), GenerateUserMail(alice, 40, 3, now)
	require.Len(t, a, 40)
	assert.Equal(t, a, b, "the same seed gives the same mail")
	var deleted, forged int
	for _, m := range a {
		for _, f := range m.Flags {
			if f == `\Deleted` {
				deleted++
			}
		}
		if bytes.Contains(m.Raw, []byte("\r\nX-Emailqos-Mac: ")) {
			forged++
		}
	}
	assert.Positive(t, deleted)
	assert.Positive(t, forged)
}
