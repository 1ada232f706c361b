package pop3watch

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/emailqos/emailqosreceiver/internal/faultnet"
	"github.com/emailqos/emailqosreceiver/internal/pop3test"
	"github.com/emailqos/emailqosreceiver/internal/probemsg"
	"github.com/emailqos/emailqosreceiver/internal/saslx"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestFindsProbe(t *testing.T) {
	for _, sec := range []transport.Security{transport.None, transport.STARTTLS, transport.TLS} {
		t.Run(string(sec), func(t *testing.T) {
			e := newEnv(t, pop3test.Options{})
			other := foreign("kept")
			e.srv.Add(testUser, other)
			var rec steps.Recorder
			s := openSession(t, e.options(sec), &rec)

			p, raw := e.probe(t, e.key)
			delivered := e.addLater(t, 250*time.Millisecond, raw)
			arr, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, e.accept(p, nil))
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			before, after := delivered()
			checkWindow(t, arr, before, after)
			if arr.Uncertainty <= 0 || arr.Uncertainty > time.Second {
				t.Fatalf("uncertainty %v out of (0, 1s]", arr.Uncertainty)
			}
			if !bytes.Contains(arr.Header, []byte("X-Emailqos-Token: "+p.Token+"\r\n")) || bytes.Contains(arr.Header, []byte("automated delivery probe")) {
				t.Fatalf("header block not returned as such: %q", arr.Header)
			}

			if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if msgs := e.messages(); len(msgs) != 1 || !bytes.Equal(msgs[0], other) {
				t.Fatalf("maildrop after Delete: %q", msgs)
			}
			if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
				t.Fatalf("second Close: %v", err)
			}

			recorded := map[string]bool{}
			for _, tm := range rec.Timings() {
				recorded[tm.Step] = true
			}
			want := []string{POP3Connect, POP3Login, POP3List, POP3Fetch, POP3Delete, POP3Quit, steps.DeliveryWait}
			if sec != transport.None {
				want = append(want, POP3TLS)
			}
			for _, step := range want {
				if !recorded[step] {
					t.Errorf("step %s not recorded", step)
				}
			}
			if s.Commands() < 10 {
				t.Fatalf("only %d commands counted", s.Commands())
			}
		})
	}
}

func TestBaselineNeverReported(t *testing.T) {
	e := newEnv(t, pop3test.Options{})
	p, raw := e.probe(t, e.key)
	// The very same message, already there before the probe was "sent".
	e.srv.Add(testUser, raw)
	s := openSession(t, e.options(transport.TLS), nil)

	_, err := s.Wait(ctxTimeout(t, 400*time.Millisecond), p.Token, e.accept(p, nil))
	requireStepErr(t, err, steps.CodeSearch, steps.TypeNotFound)

	e.addLater(t, 50*time.Millisecond, raw)
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, e.accept(p, nil))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
		t.Fatal(err)
	}
	if n := e.has(raw); n != 1 || len(e.messages()) != 1 {
		t.Fatalf("%d copies left of %d messages, want the baseline one only", n, len(e.messages()))
	}
}

func TestLookalikeUntouched(t *testing.T) {
	e := newEnv(t, pop3test.Options{}).withProxy(t)
	e.srv.Add(testUser, foreign("before"))
	s := openSession(t, e.options(transport.None), nil)

	p, raw := e.probe(t, e.key)
	// Same token, but signed with another key: not ours.
	forged := p.Build([]byte("some other key"))
	e.addLater(t, 20*time.Millisecond, forged)
	e.addLater(t, 30*time.Millisecond, foreign("meanwhile"))
	e.addLater(t, 500*time.Millisecond, raw)
	var calls atomic.Int32
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, e.accept(p, &calls))
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("accept called %d times, want once for the look-alike and once for the probe", n)
	}
	if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
		t.Fatal(err)
	}
	if e.has(forged) != 1 || e.has(raw) != 0 || len(e.messages()) != 3 {
		t.Fatalf("maildrop after Delete: %d messages", len(e.messages()))
	}
	verbs := e.proxy.verbs()
	// The look-alike, the foreign message and the probe were each read
	// once; the message already there never.
	if verbs["RETR"] != 0 || verbs["DELE"] != 1 || verbs["TOP"] != 3 {
		t.Fatalf("commands sent: %v", verbs)
	}
}

func TestFailDele(t *testing.T) {
	e := newEnv(t, pop3test.Options{FailDele: true})
	s := openSession(t, e.options(transport.TLS), nil)
	p, raw := e.probe(t, e.key)
	e.srv.Add(testUser, raw)
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, e.accept(p, nil))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Delete(ctxTimeout(t, 5*time.Second), arr.UID)
	se := requireStepErr(t, err, steps.CodeCleanup, steps.TypeUnavailable)
	if se.Step != POP3Delete {
		t.Fatalf("step %q", se.Step)
	}
	if e.has(raw) != 1 {
		t.Fatal("probe gone after a refused DELE")
	}
	if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestFailQuit(t *testing.T) {
	e := newEnv(t, pop3test.Options{FailQuit: true})
	s := openSession(t, e.options(transport.TLS), nil)
	p, raw := e.probe(t, e.key)
	e.addLater(t, 50*time.Millisecond, raw)
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, e.accept(p, nil))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Delete(ctxTimeout(t, 5*time.Second), arr.UID)
	se := requireStepErr(t, err, steps.CodeCleanup, steps.TypeUnavailable)
	if se.Step != POP3Quit {
		t.Fatalf("step %q", se.Step)
	}
	if e.has(raw) != 1 {
		t.Fatal("probe gone although QUIT failed")
	}
	// Still owned: a later attempt may remove it.
	if _, ok := s.owned[arr.UID]; !ok {
		t.Fatal("probe forgotten after a failed QUIT")
	}
}

func TestBadPassword(t *testing.T) {
	for _, sec := range []transport.Security{transport.TLS, transport.STARTTLS} {
		t.Run(string(sec), func(t *testing.T) {
			e := newEnv(t, pop3test.Options{})
			opts := e.options(sec)
			opts.Password = "wrong-" + testPassword
			_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
			se := requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeAuth)
			if se.Step != POP3Login {
				t.Fatalf("step %q", se.Step)
			}
			if strings.Contains(err.Error(), opts.Password) || strings.Contains(err.Error(), testPassword) {
				t.Fatalf("password in error %q", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	err := transcript.RedactError(errors.New("pop3: PASS refused: bad password "+testPassword), "", testPassword)
	if strings.Contains(err.Error(), testPassword) || !strings.Contains(err.Error(), transcript.Redacted) {
		t.Fatalf("not redacted: %q", err)
	}
}

func TestRefusesPlaintextCredentials(t *testing.T) {
	e := newEnv(t, pop3test.Options{}).withProxy(t)
	opts := e.options(transport.None)
	opts.AllowPlaintextAuth = false
	_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
	requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeAuth)
	if v := e.proxy.verbs(); v["USER"]+v["PASS"]+v["AUTH"] != 0 {
		t.Fatalf("credentials sent in clear: %v", v)
	}
}

func TestSTLSNotOffered(t *testing.T) {
	e := newEnv(t, pop3test.Options{DisableSTLS: true}).withProxy(t)
	_, err := Open(ctxTimeout(t, 5*time.Second), e.options(transport.STARTTLS), nil)
	se := requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeTLS)
	if se.Step != POP3TLS {
		t.Fatalf("step %q", se.Step)
	}
	v := e.proxy.verbs()
	if v["USER"]+v["PASS"]+v["AUTH"] != 0 || v["STLS"] != 1 {
		t.Fatalf("commands sent in clear: %v", v)
	}
}

func TestTLSUntrustedCertificate(t *testing.T) {
	for _, sec := range []transport.Security{transport.TLS, transport.STARTTLS} {
		t.Run(string(sec), func(t *testing.T) {
			e := newEnv(t, pop3test.Options{})
			opts := e.options(sec)
			opts.Endpoint.TLSConfig = nil // system roots do not know the test certificate
			_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
			se := requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeTLS)
			if se.Step != POP3TLS {
				t.Fatalf("step %q", se.Step)
			}
		})
	}
}

func TestBlackHole(t *testing.T) {
	for _, sec := range []transport.Security{transport.None, transport.STARTTLS, transport.TLS} {
		t.Run(string(sec), func(t *testing.T) {
			opts := Options{Endpoint: transport.Endpoint{Address: faultnet.BlackHole(t), Security: sec},
				Credentials: saslx.Credentials{Username: testUser, Password: testPassword}, AllowPlaintextAuth: true}
			start := time.Now()
			_, err := Open(ctxTimeout(t, 200*time.Millisecond), opts, nil)
			requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeTimeout)
			if d := time.Since(start); d < 190*time.Millisecond || d > 500*time.Millisecond {
				t.Fatalf("Open returned after %v", d)
			}
		})
	}
}

func TestWaitDeadline(t *testing.T) {
	e := newEnv(t, pop3test.Options{})
	s := openSession(t, e.options(transport.TLS), nil)
	e.srv.Add(testUser, foreign("not it"))
	p, _ := e.probe(t, e.key)
	start := time.Now()
	_, err := s.Wait(ctxTimeout(t, 300*time.Millisecond), p.Token, e.accept(p, nil))
	requireStepErr(t, err, steps.CodeSearch, steps.TypeNotFound)
	if d := time.Since(start); d < 290*time.Millisecond || d > 500*time.Millisecond {
		t.Fatalf("Wait returned after %v", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Wait(ctx, p.Token, nil)
	requireStepErr(t, err, steps.CodeSearch, steps.TypeCanceled)

	if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Wait(ctxTimeout(t, time.Second), p.Token, nil)
	requireStepErr(t, err, steps.CodeSearch, steps.TypeConfig)
}

func TestPollCannotConnect(t *testing.T) {
	e := newEnv(t, pop3test.Options{})
	s := openSession(t, e.options(transport.TLS), nil)
	_ = e.srv.Close()
	p, _ := e.probe(t, e.key)
	_, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, nil)
	se := requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeConnect)
	if se.Step != POP3Connect {
		t.Fatalf("step %q", se.Step)
	}
}

func TestPollStalls(t *testing.T) {
	e := newEnv(t, pop3test.Options{}).withProxy(t)
	opts := e.options(transport.None)
	opts.PollInterval = 100 * time.Millisecond
	s := openSession(t, opts, nil)
	s.stallAfter = opts.PollInterval
	e.proxy.stall(t)
	p, _ := e.probe(t, e.key)
	start := time.Now()
	_, err := s.Wait(ctxTimeout(t, 300*time.Millisecond), p.Token, nil)
	se := requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeTimeout)
	if se.Step != POP3Connect {
		t.Fatalf("step %q", se.Step)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Wait returned after %v", d)
	}
}

func TestPollSchedule(t *testing.T) {
	e := newEnv(t, pop3test.Options{}).withProxy(t)
	opts := e.options(transport.None)
	opts.PollInterval = 200 * time.Millisecond
	s := openSession(t, opts, nil)
	p, _ := e.probe(t, e.key)
	_, err := s.Wait(ctxTimeout(t, time.Second), p.Token, nil)
	requireStepErr(t, err, steps.CodeSearch, steps.TypeNotFound)
	// Open, then polls at 0, .1, .3, .5, .7, .9: one login each, and never
	// a session left open.
	logins := e.proxy.verbs()["PASS"]
	if logins < 6 || logins > 8 {
		t.Fatalf("%d logins in a second", logins)
	}
	if v := e.proxy.verbs(); v["QUIT"] != logins || v["USER"] != logins {
		t.Fatalf("commands: %v", v)
	}
}

func TestSASL(t *testing.T) {
	const goodToken = "ya29.good-bearer-token"
	e := newEnv(t, pop3test.Options{SASL: true, BearerCheck: func(user, token string) bool {
		return user == testUser && token == goodToken
	}})
	var calls atomic.Int32
	tokenOf := func(token string) saslx.TokenSource {
		return func(context.Context) (string, error) {
			calls.Add(1)
			return token, nil
		}
	}

	t.Run("ok", func(t *testing.T) {
		calls.Store(0)
		opts := e.options(transport.TLS)
		opts.Password, opts.Token = "", tokenOf(goodToken)
		s := openSession(t, opts, nil)
		p, raw := e.probe(t, e.key)
		e.addLater(t, 150*time.Millisecond, raw)
		arr, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, e.accept(p, nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
			t.Fatal(err)
		}
		if n := calls.Load(); n < 3 {
			t.Fatalf("SASL called %d times, want once per login", n)
		}
		if e.has(raw) != 0 {
			t.Fatal("probe not deleted")
		}
	})
	t.Run("bad token", func(t *testing.T) {
		opts := e.options(transport.TLS)
		opts.Token = tokenOf("ya29.revoked-token")
		_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
		requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeAuth)
		if strings.Contains(err.Error(), "revoked-token") {
			t.Fatalf("token in error %q", err)
		}
	})
	t.Run("no token", func(t *testing.T) {
		opts := e.options(transport.TLS)
		opts.Token = func(context.Context) (string, error) { return "", errors.New("token endpoint down") }
		_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
		requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeTokenUnavailable)
	})
	t.Run("not in clear", func(t *testing.T) {
		calls.Store(0)
		opts := e.options(transport.None)
		opts.AllowPlaintextAuth, opts.Token = false, tokenOf(goodToken)
		_, err := Open(ctxTimeout(t, 5*time.Second), opts, nil)
		requireStepErr(t, err, steps.CodeMailboxConnect, steps.TypeAuth)
		if calls.Load() != 0 {
			t.Fatal("a token was fetched for a connection it could not be sent over")
		}
	})
}

func TestCommandsCount(t *testing.T) {
	e := newEnv(t, pop3test.Options{}).withProxy(t)
	s := openSession(t, e.options(transport.None), nil)
	p, raw := e.probe(t, e.key)
	e.addLater(t, 150*time.Millisecond, raw)
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, e.accept(p, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, want := s.Commands(), len(e.proxy.lines()); got != want {
		t.Fatalf("Commands() = %d, %d lines sent: %q", got, want, e.proxy.lines())
	}
}

func TestDeleteOnlyOwned(t *testing.T) {
	e := newEnv(t, pop3test.Options{})
	e.srv.Add(testUser, foreign("one"))
	s := openSession(t, e.options(transport.TLS), nil)
	err := s.Delete(ctxTimeout(t, 5*time.Second), "pop3test-00000001")
	requireStepErr(t, err, steps.CodeCleanup, steps.TypeConfig)
	if len(e.messages()) != 1 {
		t.Fatal("a message that is not a probe was deleted")
	}
}

func TestDeleteAfterLostSession(t *testing.T) {
	e := newEnv(t, pop3test.Options{})
	s := openSession(t, e.options(transport.TLS), nil)
	p, raw := e.probe(t, e.key)
	e.srv.Add(testUser, raw)
	arr, err := s.Wait(ctxTimeout(t, 5*time.Second), p.Token, e.accept(p, nil))
	if err != nil {
		t.Fatal(err)
	}
	lose := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.held.close() // as when a context ended it
	}

	// A new session deletes it only if its header still names the probe.
	lose()
	s.owned[arr.UID] = "eqsomeotherprobe"
	err = s.Delete(ctxTimeout(t, 5*time.Second), arr.UID)
	requireStepErr(t, err, steps.CodeCleanup, steps.TypeProtocol)
	if e.has(raw) != 1 {
		t.Fatal("deleted a message whose header did not match")
	}

	s.owned[arr.UID] = p.Token
	lose()
	if err := s.Delete(ctxTimeout(t, 5*time.Second), arr.UID); err != nil {
		t.Fatal(err)
	}
	if len(e.messages()) != 0 {
		t.Fatal("probe not deleted by the new session")
	}
}

func TestFindProbes(t *testing.T) {
	e := newEnv(t, pop3test.Options{})
	old, oldRaw := e.probe(t, e.key)
	e.srv.Add(testUser, foreign("first"))
	e.srv.Add(testUser, oldRaw)
	_, alien := e.probe(t, []byte("another receiver's key"))
	e.srv.Add(testUser, alien)
	e.srv.Add(testUser, foreign("last"))
	s := openSession(t, e.options(transport.TLS), nil)
	accept := func(h []byte) bool { return e.accept(old, nil)(h) }

	// Oldest first, one at a time: the foreign message is read once and
	// remembered as no probe.
	uids, err := s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 1, accept)
	if err != nil || len(uids) != 0 {
		t.Fatalf("first FindProbes: %v, %v", uids, err)
	}
	uids, err = s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 1, accept)
	if err != nil || len(uids) != 1 {
		t.Fatalf("second FindProbes: %v, %v", uids, err)
	}
	// A stranger in the set refuses the whole request.
	err = s.DeleteUIDs(ctxTimeout(t, 5*time.Second), []string{uids[0], "pop3test-00000001"})
	requireStepErr(t, err, steps.CodeCleanup, steps.TypeConfig)
	if len(e.messages()) != 4 {
		t.Fatal("a refused request deleted something")
	}
	if err := s.DeleteUIDs(ctxTimeout(t, 5*time.Second), uids); err != nil {
		t.Fatal(err)
	}
	if len(e.messages()) != 3 || e.has(oldRaw) != 0 || e.has(alien) != 1 {
		t.Fatal("DeleteUIDs removed the wrong messages")
	}

	// By token, in a new session: nothing left that accept takes.
	uids, err = s.FindProbes(ctxTimeout(t, 5*time.Second), []string{old.Token}, 0, accept)
	if err != nil || len(uids) != 0 {
		t.Fatalf("FindProbes by token: %v, %v", uids, err)
	}
	_, err = s.FindProbes(ctxTimeout(t, 5*time.Second), nil, 0, nil)
	requireStepErr(t, err, steps.CodeSearch, steps.TypeConfig)
}

func TestHeaderValues(t *testing.T) {
	h := []byte("Received: from a\r\n\tby b\r\nx-emailqos-token:  eqabc \r\nSubject: X-Emailqos-Token: eqfake\r\n" +
		"X-Emailqos-Token: eqab\r\n c\r\nX-Emailqos-Token-Other: eqnot\r\n\r\nX-Emailqos-Token: eqbody\r\n")
	got := probemsg.TokenValues(h)
	if len(got) != 2 || got[0] != "eqabc" || got[1] != "eqab c" {
		t.Fatalf("got %q", got)
	}
}

func TestLoginDelay(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 0},
		{[]string{"30"}, 30 * time.Second},
		{[]string{"900", "USER"}, 15 * time.Minute},
		{[]string{"x"}, 0},
		{[]string{"999999999"}, maxLoginDelay},
	} {
		caps := map[string][]string{}
		if tc.args != nil {
			caps["LOGIN-DELAY"] = tc.args
		}
		if got := loginDelay(caps); got != tc.want {
			t.Errorf("LOGIN-DELAY %v: got %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestInvalidOptions(t *testing.T) {
	_, err := Open(context.Background(), Options{Credentials: saslx.Credentials{Username: "u"}}, nil)
	requireStepErr(t, err, steps.CodeMissingParams, steps.TypeConfig)
	_, err = Open(context.Background(), Options{Endpoint: transport.Endpoint{Address: "127.0.0.1:1"}}, nil)
	requireStepErr(t, err, steps.CodeMissingParams, steps.TypeConfig)
	_, err = Open(context.Background(), Options{Endpoint: transport.Endpoint{Address: "127.0.0.1:1", Security: "ssl"}, Credentials: saslx.Credentials{Username: "u"}}, nil)
	requireStepErr(t, err, steps.CodeInvalidInstance, steps.TypeConfig)
}

func BenchmarkProbe(b *testing.B) {
	e := newEnv(b, pop3test.Options{})
	opts := e.options(transport.None)
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := Open(ctx, opts, nil)
		if err != nil {
			b.Fatal(err)
		}
		p, raw := e.probe(b, e.key)
		e.srv.Add(testUser, raw)
		arr, err := s.Wait(ctx, p.Token, e.accept(p, nil))
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Delete(ctx, arr.UID); err != nil {
			b.Fatal(err)
		}
		if err := s.Close(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}
