package probe

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/authres"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/mailtest"
)

// A Gmail-to-Microsoft-365 header in the providers' public formats, newest
// field first, anonymised.
const m365Header = "Received: from AM0PR01MB6418.eurprd01.prod.exchangelabs.com (2603:10a6:208:16e::14)\r\n" +
	" by AS8PR01MB7431.eurprd01.prod.exchangelabs.com with HTTPS; Mon, 14 Sep 2026\r\n" +
	" 10:04:09 +0000\r\n" +
	"Authentication-Results: spf=pass (sender IP is 209.85.221.41)\r\n" +
	" smtp.mailfrom=example.com; dkim=pass (signature was verified)\r\n" +
	" header.d=example.com;dmarc=pass action=none\r\n" +
	" header.from=example.com;compauth=pass reason=100\r\n" +
	"Received: from mail-wr1-f41.google.com (209.85.221.41) by\r\n" +
	" AM2PEPF0001C70F.mail.protection.outlook.com (10.167.16.196) with Microsoft\r\n" +
	" SMTP Server (version=TLS1_3, cipher=TLS_AES_256_GCM_SHA384) id 15.20.8005.13\r\n" +
	" via Frontend Transport; Mon, 14 Sep 2026 10:04:07 +0000\r\n" +
	"Received: by mail-wr1-f41.google.com with SMTP id ffacd0b85a97d-37d4e5f6a7bso123456f8f.2\r\n" +
	"        for <probe@example.net>; Mon, 14 Sep 2026 03:04:06 -0700 (PDT)\r\n" +
	"From: probe@example.com\r\n" +
	"To: probe@example.net\r\n" +
	"\r\n"

func TestReadMessageSplitsAndJudges(t *testing.T) {
	// The collector's clock: submission began 0.4 s before Gmail stamped
	// the message, Gmail's reply came 0.3 s after, the reader saw it at
	// 10:04:10.2.
	stamp := time.Date(2026, 9, 14, 10, 4, 6, 0, time.UTC)
	sent, accepted := stamp.Add(-400*time.Millisecond), stamp.Add(300*time.Millisecond)
	arrived := time.Date(2026, 9, 14, 10, 4, 10, 200e6, time.UTC)
	gmail := &Account{Key: "gmail", Domains: []string{"example.com", "google.com"}}
	o365 := &Account{Key: "o365", Domains: []string{"example.net", "outlook.com", "exchangelabs.com"},
		AuthServIDs: []string{""}}
	tg := &Target{Name: "gmail:o365", Kind: Transit, Sender: gmail, Receiver: o365}
	res := &Result{AcceptedAt: accepted, ArrivedAt: arrived, DeliveryLatency: arrived.Sub(accepted)}

	readMessage(res, tg, []byte(m365Header), sent, zap.NewNop())

	require.NotNil(t, res.Auth)
	assert.Equal(t, authres.Pass, res.Auth.SPF.Value)
	assert.Equal(t, authres.Pass, res.Auth.DKIM.Value)
	assert.Equal(t, authres.Pass, res.Auth.DMARC.Value)
	assert.Empty(t, res.Auth.ARC.Value, "no ARC result reported")

	require.NotNil(t, res.Path)
	p := res.Path
	assert.True(t, p.Skew.Known)
	assert.Zero(t, p.Skew.Offset, "the stamp lies between send and reply")
	assert.Equal(t, res.DeliveryLatency, p.Outbound+p.Relay+p.Inbound+p.Store, "the split adds up to the latency")
	assert.Equal(t, accepted.Sub(sent), p.Submission)
	assert.Positive(t, p.Outbound, "Gmail's queue until Microsoft's edge took it")
	assert.Positive(t, p.Inbound, "Microsoft's hops")
	for _, h := range p.Hops {
		assert.GreaterOrEqual(t, h.Duration, time.Duration(0))
	}
}

func TestReadMessageWithoutHeaderFields(t *testing.T) {
	tg := &Target{Name: "a", Sender: &Account{}, Receiver: &Account{}}
	res := &Result{}
	readMessage(res, tg, nil, time.Now(), zap.NewNop())
	assert.Nil(t, res.Auth)
	assert.Nil(t, res.Path)
	readMessage(res, tg, []byte("Subject: nothing here\r\n\r\n"), time.Now(), zap.NewNop())
	assert.Nil(t, res.Auth)
	assert.Nil(t, res.Path)
	// A hostile header does not break the probe's result.
	readMessage(res, tg, []byte("Received: "+strings.Repeat("(", 5000)+"\r\nAuthentication-Results: ;;;\r\n\r\n"),
		time.Now(), zap.NewNop())
}

// A real probe through the in-process mail system: its one Received hop (the
// submission server's) splits the delivery, which adds up to the measured
// latency.
func TestProbeReadsItsReceivedChain(t *testing.T) {
	srv := startMail(t, mailtest.Options{DeliveryDelay: 50 * time.Millisecond})
	a := account(srv, "a", alice, "alice-pw", imapwatch.MethodPrecise)
	b := account(srv, "b", bob, "bob-pw", imapwatch.MethodPrecise)
	r := Run(context.Background(), target(a, b), nil)
	require.NoError(t, r.Err)
	require.NotNil(t, r.Path, "the chain was read")
	p := r.Path
	assert.Len(t, p.Hops, 1)
	assert.Equal(t, r.DeliveryLatency, p.Outbound+p.Relay+p.Inbound+p.Store)
	assert.Equal(t, r.AcceptedAt.Sub(p.Hops[0].Start), time.Duration(0), "the first hop starts at the reply to DATA")
	assert.Nil(t, r.Auth, "the in-process server adds no Authentication-Results")
}
