package dsn

import (
	"errors"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/probemsg"
)

// FuzzParse feeds arbitrary notices to Parse and Probe: no panic, each
// call bounded in time, and anything accepted as a probe's notice carries
// returned headers that verify with the key by themselves.
func FuzzParse(f *testing.F) {
	p, msg := newProbe(f, testKey)
	for _, name := range []string{"postfix-failed", "postfix-delayed", "gmail-failed", "exchange-failed"} {
		f.Add(sample(f, name, msg, p.Token, p.Token))
	}
	f.Add([]byte("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: message/delivery-status\r\n\r\nOriginal-Envelope-Id: " + p.Token + "\r\n\r\nAction: failed\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, notice []byte) {
		start := time.Now()
		r, err := Parse(notice)
		if err == nil {
			if len(r.Recipients) == 0 {
				t.Fatal("accepted a report without recipients")
			}
			if got, perr := r.Probe(testKey); perr == nil {
				again, verr := probemsg.Parse(r.ReturnedHeaders, testKey)
				if verr != nil || again.Token != got.Token {
					t.Fatalf("accepted a notice whose returned headers do not verify: %v", verr)
				}
				if r.OriginalEnvelopeID != "" && r.OriginalEnvelopeID != got.Token {
					t.Fatal("accepted a notice whose envelope id names another probe")
				}
			}
		} else if r != nil {
			t.Fatal("report returned with an error")
		}
		if err != nil && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrNotDSN) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error outside the documented set: %v", err)
		}
		// Generous: a 1 MiB notice parses in milliseconds; this only
		// catches a hang or a blow-up, on a busy machine.
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Parse took %v", d)
		}
	})
}
