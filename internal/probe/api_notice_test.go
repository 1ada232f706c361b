package probe

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/emailqos/emailqosreceiver/internal/gmailapitest"
	"github.com/emailqos/emailqosreceiver/internal/graphtest"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// apiNoticeFixture is a mail API fake (Graph or Gmail) whose Notice hook
// is the test's: the probe's notice is built from internal/dsn's sample
// of the API's own provider (Exchange Online, Gmail).
type apiNoticeFixture struct {
	tmpl    string // the provider's failure sample
	status  string
	reply   int
	account func(addr string) *Account
	deliver func(user string, raw []byte) error
	// messages lists user's mailbox (inbox and junk; all labels).
	messages func(user string) [][]byte
	// reads counts the reads of a message's whole content ($value,
	// format=raw).
	reads *atomic.Int64
}

type noticeHook func(rcpt string, raw []byte) (notice []byte, deliver bool)

func apiNoticeFixtures(t *testing.T, users []string, hook *noticeHook) map[string]apiNoticeFixture {
	call := func(rcpt string, raw []byte) ([]byte, bool) {
		if *hook == nil {
			return nil, true
		}
		return (*hook)(rcpt, raw)
	}
	return map[string]apiNoticeFixture{
		"graph": func() apiNoticeFixture {
			var reads atomic.Int64
			gr := graphtest.New(graphtest.Options{Users: users, Notice: call, OnRequest: func(r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/$value") {
					reads.Add(1)
				}
			}})
			t.Cleanup(gr.Close)
			return apiNoticeFixture{tmpl: "exchange-failed", status: "5.1.10", reply: 550,
				account: func(addr string) *Account { return graphAccount(t, gr, addr) },
				deliver: gr.Deliver,
				messages: func(user string) [][]byte {
					var out [][]byte
					for _, f := range []string{"inbox", "junkemail", "deleteditems"} {
						for _, m := range gr.Messages(user, f) {
							out = append(out, m.Raw)
						}
					}
					return out
				},
				reads: &reads}
		}(),
		"gmail": func() apiNoticeFixture {
			var reads atomic.Int64
			gm := gmailapitest.New(gmailapitest.Options{Users: users, Notice: call, OnRequest: func(r *http.Request) {
				if r.URL.Query().Get("format") == "raw" {
					reads.Add(1)
				}
			}})
			t.Cleanup(gm.Close)
			return apiNoticeFixture{tmpl: "gmail-failed", status: "5.1.1", reply: 550,
				account: func(addr string) *Account { return gmailAccount(t, gm, addr) },
				deliver: gm.Deliver,
				messages: func(user string) [][]byte {
					var out [][]byte
					for _, m := range gm.Messages(user, "") {
						if !strings.Contains(strings.Join(m.Labels, " "), "SENT") {
							out = append(out, m.Raw)
						}
					}
					return out
				},
				reads: &reads}
		}(),
	}
}

const (
	apiFrom = "alice@api.test"
	apiTo   = "bob@api.test"
)

// TestAPIBounce: a probe refused after the API accepted it is reported
// bounced (code 4, the notice's status and reply code) well before the
// delivery timeout, over Graph and over the Gmail API, in a transit and in
// a round trip; the probe's notice is removed from the sender's mailbox,
// and a bounce about another message and a forged one (a wrong MAC)
// planted beside it stay byte-identical.
func TestAPIBounce(t *testing.T) {
	for _, kind := range []string{"transit", "roundtrip"} {
		var hook noticeHook
		for name, fx := range apiNoticeFixtures(t, []string{apiFrom, apiTo}, &hook) {
			t.Run(kind+"/"+name, func(t *testing.T) {
				var mu sync.Mutex
				var planted [][]byte
				hook = func(rcpt string, raw []byte) ([]byte, bool) {
					mu.Lock()
					defer mu.Unlock()
					for _, m := range [][]byte{notice(t, fx.tmpl, notProbe), notice(t, fx.tmpl, forged(raw))} {
						planted = append(planted, m)
						assert.NoError(t, fx.deliver(apiFrom, m))
					}
					return notice(t, fx.tmpl, raw), false
				}
				a := fx.account(apiFrom)
				tg := apiTarget(a)
				if kind == "transit" {
					tg = target(a, fx.account(apiTo))
					tg.PollInterval = 50 * time.Millisecond
				}
				tg.DSN = true
				tg.DeliveryTimeout = 5 * time.Second
				res := Run(context.Background(), tg, nil)
				assertBounced(t, res, fx.status, fx.reply, 4*time.Second)
				assert.True(t, res.NoticesWatched)
				mu.Lock()
				defer mu.Unlock()
				assert.ElementsMatch(t, planted, fx.messages(apiFrom), "only the probe's notice is removed")
				assert.Empty(t, fx.messages(apiTo))
			})
		}
	}
}

// TestAPIDelayNotice: a delay notice arriving before the probe is counted
// during the wait and removed, and the probe is delivered; with cleanup
// keep it stays. One arriving together with the probe is counted too (by
// the same run's housekeeping when the receiver saw the probe first).
func TestAPIDelayNotice(t *testing.T) {
	var hook noticeHook
	for name, fx := range apiNoticeFixtures(t, []string{apiFrom, apiTo}, &hook) {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			defer wg.Wait()
			hook = func(rcpt string, raw []byte) ([]byte, bool) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(400 * time.Millisecond) // still being retried
					assert.NoError(t, fx.deliver(rcpt, raw))
				}()
				return notice(t, "postfix-delayed", raw), false
			}
			tg := target(fx.account(apiFrom), fx.account(apiTo))
			tg.PollInterval = 50 * time.Millisecond
			tg.DSN = true
			res := Run(context.Background(), tg, nil)
			require.NoError(t, res.Err)
			assert.True(t, res.Delivered)
			assert.Equal(t, 1, res.DelayNotices)
			require.Len(t, res.Notices, 1)
			assert.Equal(t, "delayed", res.Notices[0].Action)
			assert.Equal(t, "4.3.0", res.Notices[0].Status)
			assert.Empty(t, len(fx.messages(apiFrom)), "the delay notice is cleaned up")
			assert.Empty(t, len(fx.messages(apiTo)), "and the probe")

			hook = func(rcpt string, raw []byte) ([]byte, bool) {
				return notice(t, "postfix-delayed", raw), true
			}
			res = Run(context.Background(), tg, zaptest.NewLogger(t))
			require.NoError(t, res.Err)
			assert.Equal(t, 1, res.DelayNotices, "with the probe")
			assert.Zero(t, len(fx.messages(apiFrom)))

			tg.Cleanup = CleanupKeep
			res = Run(context.Background(), tg, nil)
			require.NoError(t, res.Err)
			assert.Equal(t, 1, res.DelayNotices)
			assert.Equal(t, 1, len(fx.messages(apiFrom)), "kept with cleanup keep")
		})
	}
}

// TestAPIForeignNoticesUntouched: notices that are not the probe's (about
// another message, forged, about another key's probe, another report type)
// never end the probe nor are removed; the probe is delivered.
func TestAPIForeignNoticesUntouched(t *testing.T) {
	var hook noticeHook
	for name, fx := range apiNoticeFixtures(t, []string{apiFrom, apiTo}, &hook) {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var planted [][]byte
			hook = func(rcpt string, raw []byte) ([]byte, bool) {
				mu.Lock()
				defer mu.Unlock()
				p, err := probemsg.New(apiFrom, apiTo, "x", time.Now())
				require.NoError(t, err)
				otherKey := p.Build([]byte("another key"))
				for _, m := range [][]byte{
					notice(t, fx.tmpl, notProbe),
					notice(t, fx.tmpl, forged(raw)),
					notice(t, fx.tmpl, otherKey),
					bytes.Replace(notice(t, fx.tmpl, raw), []byte("report-type=delivery-status"), []byte("report-type=disposition-notification"), 1),
				} {
					planted = append(planted, m)
					assert.NoError(t, fx.deliver(apiFrom, m))
				}
				return nil, true
			}
			tg := target(fx.account(apiFrom), fx.account(apiTo))
			tg.PollInterval = 50 * time.Millisecond
			tg.DSN = true
			res := Run(context.Background(), tg, nil)
			require.NoError(t, res.Err)
			assert.True(t, res.Delivered)
			assert.Empty(t, res.Notices)
			assert.Zero(t, res.DelayNotices)
			mu.Lock()
			defer mu.Unlock()
			assert.ElementsMatch(t, planted, fx.messages(apiFrom))
		})
	}
}

// TestAPIOversizeNotice: a failure notice quoting the probe but over the
// 1 MiB cap is not judged (the probe is delivered, not bounced) and stays;
// Gmail's is not even read (its sizeEstimate says so), Graph's is read no
// further than the cap.
func TestAPIOversizeNotice(t *testing.T) {
	var hook noticeHook
	for name, fx := range apiNoticeFixtures(t, []string{apiFrom, apiTo}, &hook) {
		t.Run(name, func(t *testing.T) {
			var big []byte
			hook = func(rcpt string, raw []byte) ([]byte, bool) {
				big = append(notice(t, fx.tmpl, raw), bytes.Repeat([]byte("x"), 2<<20)...)
				return big, true
			}
			tg := target(fx.account(apiFrom), fx.account(apiTo))
			tg.PollInterval = 50 * time.Millisecond
			tg.DSN = true
			res := Run(context.Background(), tg, nil)
			require.NoError(t, res.Err)
			assert.True(t, res.Delivered)
			assert.Empty(t, res.Notices)
			assert.Equal(t, [][]byte{big}, fx.messages(apiFrom))
			reads := fx.reads.Load()
			if name == "gmail" {
				assert.Zero(t, reads, "not read (its sizeEstimate is over the cap)")
			} else {
				// Once, or twice when the end of the wait cut the first read
				// short (the probe arrives with it): then the housekeeping
				// reads it.
				assert.True(t, reads == 1 || reads == 2, "read up to the cap, and dropped: %d reads", reads)
			}

			// Later runs do not read it again.
			hook = nil
			require.NoError(t, Run(context.Background(), tg, nil).Err)
			assert.Equal(t, [][]byte{big}, fx.messages(apiFrom))
			assert.Equal(t, reads, fx.reads.Load(), "not read again")
		})
	}
}

// TestAPILateBounce: a bounce arriving after its probe was reported not
// found is counted at the next run (from the history since the previous
// session) and removed; even when another target's session on the same
// account read past it meanwhile.
func TestAPILateBounce(t *testing.T) {
	for _, between := range []bool{false, true} {
		var hook noticeHook
		for name, fx := range apiNoticeFixtures(t, []string{apiFrom, apiTo}, &hook) {
			t.Run(name+map[bool]string{false: "", true: "/read_by_another_target"}[between], func(t *testing.T) {
				var mu sync.Mutex
				var first []byte
				hook = func(rcpt string, raw []byte) ([]byte, bool) {
					mu.Lock()
					defer mu.Unlock()
					if first == nil {
						first = raw // held in a queue, bounced later
						return nil, false
					}
					return nil, true
				}
				a, b := fx.account(apiFrom), fx.account(apiTo)
				tg := target(a, b)
				tg.PollInterval = 50 * time.Millisecond
				tg.DSN = true
				tg.DeliveryTimeout = 500 * time.Millisecond
				tg.OrphanAge = time.Hour
				res := Run(context.Background(), tg, nil)
				require.Equal(t, steps.TypeNotFound, res.ErrorType, res.Err)

				mu.Lock()
				require.NoError(t, fx.deliver(apiFrom, notice(t, fx.tmpl, first)))
				mu.Unlock()
				if between {
					// A round trip of the sender's account reads its
					// mailbox past the notice first.
					rt := apiTarget(a)
					require.NoError(t, Run(context.Background(), rt, nil).Err)
					require.Len(t, fx.messages(apiFrom), 1, "not the round trip's to remove")
				}
				tg.DeliveryTimeout = 3 * time.Second
				res = Run(context.Background(), tg, nil)
				require.NoError(t, res.Err)
				assert.Equal(t, 1, res.LateBounces)
				assert.Empty(t, fx.messages(apiFrom))

				res = Run(context.Background(), tg, nil)
				require.NoError(t, res.Err)
				assert.Zero(t, res.LateBounces, "counted once")
			})
		}
	}
}

// The notice housekeeping's extra poll does not move the mailbox's saved
// position: a message it lists (a late probe, say) is still in the next
// session's backlog, where the probes' housekeeping looks.
func TestAPINoticePollKeepsPosition(t *testing.T) {
	var hook noticeHook
	for name, fx := range apiNoticeFixtures(t, []string{apiFrom}, &hook) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			a := fx.account(apiFrom)
			tg := apiTarget(a)
			open := func() (mailbox, *apiMailbox) {
				box, err := openAccountMailbox(ctx, tg, a, zap.NewNop(), &steps.Recorder{}, nil)
				require.NoError(t, err)
				switch b := box.(type) {
				case *graphMailbox:
					return b, b.apiMailbox
				case *gmailMailbox:
					return b, b.apiMailbox
				}
				t.Fatalf("unexpected mailbox %T", box)
				return nil, nil
			}
			box, first := open()
			require.NoError(t, fx.deliver(apiFrom, notProbe))
			_, err := first.FindNotices(ctx, time.Now().Add(-time.Hour), time.Time{}, 10, func([]byte) (bool, bool) { return false, false })
			require.NoError(t, err)
			require.Len(t, first.order, 1, "the extra poll listed it")
			require.NoError(t, box.Close(ctx))
			_, second := open()
			assert.Len(t, second.order, 1, "and the next session still does")
		})
	}
}

// With cleanup mode move, the probe's notice is moved, not deleted: to
// cleanup.folder over Graph, to the trash over Gmail.
func TestAPIBounceMovedWithCleanupMove(t *testing.T) {
	gr := graphtest.New(graphtest.Options{Users: []string{apiFrom}, Notice: func(_ string, raw []byte) ([]byte, bool) {
		return notice(t, "exchange-failed", raw), false
	}})
	defer gr.Close()
	gm := gmailapitest.New(gmailapitest.Options{Users: []string{apiFrom}, Notice: func(_ string, raw []byte) ([]byte, bool) {
		return notice(t, "gmail-failed", raw), false
	}})
	defer gm.Close()
	for name, a := range map[string]*Account{"graph": graphAccount(t, gr, apiFrom), "gmail": gmailAccount(t, gm, apiFrom)} {
		t.Run(name, func(t *testing.T) {
			tg := apiTarget(a)
			tg.DSN = true
			tg.Cleanup, tg.CleanupFolder = CleanupMove, "deleteditems"
			res := Run(context.Background(), tg, nil)
			require.Equal(t, steps.TypeBounced, res.ErrorType, res.Err)
			if name == "graph" {
				assert.Empty(t, gr.Messages(apiFrom, "inbox"))
				moved := gr.Messages(apiFrom, "deleteditems")
				require.Len(t, moved, 1)
				assert.Contains(t, string(moved[0].Raw), "multipart/report")
			} else {
				assert.Empty(t, gm.Messages(apiFrom, "INBOX"))
				trashed := gm.Messages(apiFrom, "TRASH")
				require.Len(t, trashed, 1)
				assert.Contains(t, string(trashed[0].Raw), "multipart/report")
			}
		})
	}
}
