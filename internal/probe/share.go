package probe

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/steps"
	"github.com/emailqos/emailqosreceiver/internal/transcript"
	"github.com/emailqos/emailqosreceiver/internal/transport"
)

// watcher is the IMAP session an account's mailbox is watched with while
// probes read it (Account.ShareSession): the first probe opens it, the
// probes that come while it is open join it (imapwatch.Member), and the
// last to leave logs it out. It holds one of the account's sessions
// (max_sessions) while open.
type watcher struct {
	mu      sync.Mutex
	sess    *imapwatch.Session
	refs    int
	release func()
	opening *opening
	// tls is what the session's TLS handshake showed: a probe that joins
	// reports it too (its certificate is the one the probe reads through).
	tls []steps.TLS
	// opened are the timed steps of an opening no probe reports: a bounce
	// watch (its recorder is its own) opened the session. The first probe
	// reading the mailbox reports them, so the mailbox's login is measured
	// in every collection whoever opened it.
	opened []steps.Timing
}

// opening is an open under way, which the probes coming meanwhile wait
// for: they join it, or fail with its error (one failed login, not one
// per probe).
type opening struct {
	done chan struct{}
	err  error
}

// joinShared returns a member of r's watcher session, opening it if none
// is open. wait says whether to wait for a free session of the account
// (max_sessions) when it has to be opened; without, a busy account is
// errNoSlot at once. A bounce watch calls it without waiting, and with a
// recorder of its own (see watcher.opened).
func joinShared(ctx context.Context, t *Target, r *Account, logger *zap.Logger, rec *steps.Recorder, tr *transcript.Transcript, wait bool) (mailbox, error) {
	w := &r.watch
	for {
		w.mu.Lock()
		if w.sess != nil {
			m, err := w.sess.Join(rec, &t.learner)
			if err == nil {
				w.refs++
				for _, h := range w.tls {
					rec.AddTLS(h)
				}
				if wait {
					for _, tm := range w.opened {
						rec.Add(tm.Step, tm.Start, tm.Duration)
					}
					w.opened = nil
				}
				w.mu.Unlock()
				return sharedMailbox{imapMailbox{m}, w}, nil
			}
			w.sess = nil // logged out meanwhile: open another
		}
		if o := w.opening; o != nil {
			w.mu.Unlock()
			select {
			case <-o.done:
			case <-ctx.Done():
				return nil, steps.Fail(ctx, steps.IMAPConnect, "", fmt.Errorf("waiting for the mailbox's session to open: %w", context.Cause(ctx)))
			}
			if o.err != nil {
				return nil, o.err
			}
			continue
		}
		o := &opening{done: make(chan struct{})}
		w.opening = o
		w.mu.Unlock()

		m, release, err := openWatcher(ctx, t, r, logger, rec, tr, wait)
		w.mu.Lock()
		w.opening = nil
		if err == nil {
			w.sess, w.refs, w.release = m.Session(), 1, release
			w.tls, w.opened = nil, nil
			for _, h := range rec.TLS() {
				if h.Protocol == "imap" {
					w.tls = append(w.tls, h)
				}
			}
			if !wait {
				w.opened = rec.Timings()
			}
		}
		o.err = err
		close(o.done)
		w.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return sharedMailbox{imapMailbox{m}, w}, nil
	}
}

var errNoSlot = errors.New("all sessions of the mailbox (max_sessions) are busy")

// openWatcher opens r's watcher session, in one of its sessions.
func openWatcher(ctx context.Context, t *Target, r *Account, logger *zap.Logger, rec *steps.Recorder, tr *transcript.Transcript, wait bool) (*imapwatch.Member, func(), error) {
	var release func()
	if wait {
		var err error
		if release, err = r.acquire(ctx); err != nil {
			// Limit, not the timeout of the probe's context: no session
			// freed up within it.
			return nil, nil, steps.New(steps.IMAPConnect, steps.TypeLimit,
				fmt.Errorf("all %d sessions of the mailbox (max_sessions) stayed busy: %w", r.MaxSessions, err))
		}
	} else {
		var ok bool
		if release, ok = r.tryAcquire(); !ok {
			return nil, nil, errNoSlot
		}
	}
	m, err := imapwatch.OpenShared(ctx, imapOptions(t, r, logger, tr), rec)
	if err != nil {
		release()
		return nil, nil, err
	}
	return m, release, nil
}

// imapOptions are the options of a session reading r's mailbox for t.
func imapOptions(t *Target, r *Account, logger *zap.Logger, tr *transcript.Transcript) imapwatch.Options {
	return imapwatch.Options{
		Endpoint:           r.IMAP,
		Credentials:        r.credentials(tr),
		AllowPlaintextAuth: r.IMAP.Security == transport.None,
		Mailbox:            r.Mailbox,
		Method:             r.Detection,
		PollInterval:       t.PollInterval,
		PreciseInterval:    t.PreciseInterval,
		JunkFolders:        r.JunkFolders,
		DiscoverJunk:       r.DiscoverJunk,
		Search:             &r.search,
		Learner:            &t.learner,
		Logger:             logger,
		Transcript:         tr,
	}
}

// sharedMailbox is a probe's membership of its mailbox's watcher session.
type sharedMailbox struct {
	imapMailbox
	w *watcher
}

func (m sharedMailbox) Close(ctx context.Context) error {
	w := m.w
	w.mu.Lock()
	w.refs--
	last := w.refs == 0
	var release func()
	if last {
		w.sess, release = nil, w.release
	}
	w.mu.Unlock()
	err := m.imapMailbox.Close(ctx)
	if release != nil {
		release()
	}
	return err
}
