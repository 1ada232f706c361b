package pop3watch

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// A malformed UIDL listing while the session opens is a protocol error of
// the mailbox connection, not a cancellation: the session's own teardown
// must not colour how its failure is classified.
func TestMalformedListingIsProtocol(t *testing.T) {
	e := newEnv(t, pop3test.Options{})
	e.srv.Add(testUser, foreign("ordinary"))
	p, err := faultnet.NewProxy(e.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	uidl := regexp.MustCompile(`^(\d+) pop3test-\d+`)
	if err := p.Set(faultnet.Fault{Server: func(l []byte) []byte { return uidl.ReplaceAll(l, []byte("$1")) }}); err != nil {
		t.Fatal(err)
	}
	opts := e.options(transport.None)
	opts.Endpoint.Address = p.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = Open(ctx, opts, &steps.Recorder{})
	requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeProtocol)
}
