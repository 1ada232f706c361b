package mailtest

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// imapCaps is what the server announces. imapserver lists IDLE for every
// IMAP4rev1 server and IMAP4rev2 implies it, so without IDLE the server is
// IMAP4rev1 plus the rev2 extensions it implements, and the IDLE filter
// removes the IDLE token itself.
func imapCaps(disableIDLE bool) imap.CapSet {
	if !disableIDLE {
		return imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {}}
	}
	return imap.CapSet{
		imap.CapIMAP4rev1:    {},
		imap.CapNamespace:    {},
		imap.CapUIDPlus:      {},
		imap.CapESearch:      {},
		imap.CapListExtended: {},
		imap.CapListStatus:   {},
		imap.CapMove:         {},
		imap.CapStatusSize:   {},
	}
}

func (s *Server) newIMAPServer(caps imap.CapSet, startTLS *tls.Config, faults bool) *imapserver.Server {
	return imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			sess := &imapSession{
				SessionIMAP4rev2: s.mem.NewSession().(imapserver.SessionIMAP4rev2),
				changes:          &s.changes,
				srv:              s,
				failExpunge:      func() bool { return faults && s.faults().FailExpunge },
				front:            faults,
			}
			if s.opts.BearerCheck != nil {
				return &imapSASLSession{imapSession: sess, s: s}, nil, nil
			}
			return sess, nil, nil
		},
		Caps:         caps,
		Logger:       printfLogger{s.log.Named("imap").Sugar()},
		TLSConfig:    startTLS,
		InsecureAuth: true, // the client decides whether to send credentials in clear
	})
}

func (s *Server) startIMAP(plain, implicit net.Listener) {
	var startTLS *tls.Config
	if s.certs != nil && !s.opts.DisableSTARTTLS {
		startTLS = s.serverTLS()
	}
	caps := imapCaps(s.opts.DisableIDLE)
	if s.t.caps != nil {
		caps = s.t.caps
	}
	srv := s.newIMAPServer(caps, startTLS, true)
	s.imap.srv = srv
	s.imap.conns = newConnGroup()

	goLoop := func(f func()) {
		s.imap.loops.Add(1)
		go func() {
			defer s.imap.loops.Done()
			f()
		}()
	}
	if !s.t.filtered(s.opts.DisableIDLE) {
		goLoop(func() { _ = srv.Serve(trackListener{plain, s.imap.conns}) })
		if implicit != nil {
			ln := tls.NewListener(trackListener{implicit, s.imap.conns}, s.serverTLS())
			goLoop(func() { _ = srv.Serve(ln) })
		}
		return
	}

	// Without IDLE, or with a personality's capabilities, every client goes
	// through the filter, and imapserver is fed the other end of an
	// in-memory pipe.
	s.imap.front = newConnGroup()
	s.imap.backend = newPipeListener()
	goLoop(func() { _ = srv.Serve(s.imap.backend) })
	goLoop(func() { s.acceptFiltered(plain, false) })
	if implicit != nil {
		goLoop(func() { s.acceptFiltered(implicit, true) })
	}
}

func (s *Server) acceptFiltered(ln net.Listener, implicitTLS bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc, ok := s.imap.front.track(c)
		if !ok {
			continue
		}
		// Tracked by s.imap.front until it closes tc.
		go s.filterIMAP(tc, implicitTLS)
	}
}

func (s *Server) filterIMAP(client *trackedConn, implicitTLS bool) {
	defer client.Close()
	near, far := net.Pipe()
	tfar, ok := s.imap.conns.track(far)
	if !ok {
		near.Close()
		return
	}
	// imapserver must see a *tls.Conn to treat the session as secure.
	var served net.Conn = tfar
	if implicitTLS {
		served = tls.Server(tfar, s.serverTLS())
	}
	if err := s.imap.backend.push(served); err != nil {
		near.Close()
		tfar.Close()
		return
	}
	// The filter closes the raw conns; client.Close, deferred, releases the
	// tracking only once the filter is done.
	f := &idleFilter{
		frontRaw: client.Conn, backRaw: near,
		front: client.Conn, back: near,
		serverTLS: s.serverTLS(), clientTLS: s.ClientTLSConfig(),
		hideIDLE: s.opts.DisableIDLE, addCaps: s.t.addCaps, dropCaps: s.t.dropCaps, gmRaw: s.t.gmail,
	}
	if implicitTLS {
		f.front = tls.Server(client.Conn, f.serverTLS)
		f.back = tls.Client(near, f.clientTLS)
	}
	f.run()
}

func (s *Server) stopIMAP() error {
	if s.imap.srv == nil {
		return nil
	}
	for _, ln := range s.imap.listeners {
		ln.Close()
	}
	if s.imap.backend != nil {
		s.imap.backend.Close()
	}
	s.imap.loops.Wait()
	if s.imap.front != nil {
		s.imap.front.shutdown()
	}
	s.imap.conns.shutdown()
	_ = s.imap.srv.Close() // only reports the listeners we already closed
	var errs []error
	if s.imap.front != nil {
		errs = append(errs, s.imap.front.wait(stopTimeout))
	}
	errs = append(errs, s.imap.conns.wait(stopTimeout))
	return errors.Join(errs...)
}

func (s *Server) startInner() {
	s.inner.srv = s.newIMAPServer(imapCaps(false), nil, false)
	s.inner.ln = newPipeListener()
	s.inner.conns = newConnGroup()
	s.inner.loop.Add(1)
	go func() {
		defer s.inner.loop.Done()
		_ = s.inner.srv.Serve(s.inner.ln)
	}()
}

func (s *Server) dialInner() (net.Conn, error) {
	near, far := net.Pipe()
	tfar, ok := s.inner.conns.track(far)
	if !ok {
		near.Close()
		return nil, errors.New("mailtest: server closed")
	}
	if err := s.inner.ln.push(tfar); err != nil {
		near.Close()
		tfar.Close()
		return nil, errors.New("mailtest: server closed")
	}
	return near, nil
}

func (s *Server) stopInner() error {
	if s.inner.srv == nil {
		return nil
	}
	s.inner.ln.Close()
	s.inner.loop.Wait()
	s.inner.conns.shutdown()
	_ = s.inner.srv.Close()
	return s.inner.conns.wait(stopTimeout)
}

// imapSession wraps the memory session for FailExpunge and for IDLE:
// imapserver's tracker only wakes an IDLE for updates queued after it
// registered, which happens in a goroutine started after "+ idling" was sent,
// so a delivery right then went unannounced until the next change. Here IDLE
// polls once after subscribing to changes and again on every change.
type imapSession struct {
	imapserver.SessionIMAP4rev2
	changes     *broadcast
	srv         *Server
	user        *account // once logged in
	failExpunge func() bool
	// front: a client's session, which the personality applies to (the
	// internal snapshot sessions see the plain store).
	front    bool
	selected string // mailbox name, canonical
	counted  bool   // against the account's session cap
}

func (x *imapSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	var hold time.Duration
	if x.front {
		if x.traits().fakeIdle {
			// The changes come with the answer to DONE, as Cyrus without
			// idled sends them.
			<-stop
			return x.Poll(w, true)
		}
		hold = x.traits().idleHold
	}
	for first := true; ; first = false {
		changed := x.changes.wait()
		if !first && hold > 0 {
			t := time.NewTimer(hold)
			select {
			case <-stop:
				// Held changes go out with the answer to DONE.
				t.Stop()
				return x.Poll(w, true)
			case <-t.C:
			}
		}
		if err := x.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-changed:
		}
	}
}

func (x *imapSession) Expunge(w *imapserver.ExpungeWriter, uids *imap.UIDSet) error {
	if x.failExpunge() {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Expunge refused (mailtest FailExpunge)"}
	}
	if x.front && x.user != nil {
		if uids != nil && x.traits().noUIDPlus {
			return errUnknownCommand
		}
		if x.traits().gmail {
			if err := x.gmailExpunge(uids); err != nil {
				return err
			}
		}
	}
	defer x.changes.notify()
	return x.SessionIMAP4rev2.Expunge(w, uids)
}

func (x *imapSession) Append(mailbox string, r imap.LiteralReader, options *imap.AppendOptions) (*imap.AppendData, error) {
	defer x.changes.notify()
	var (
		data *imap.AppendData
		err  error
	)
	if x.front && x.user != nil && x.traits().gmail && canonical(mailbox) == inbox {
		data, err = x.appendGmail(r, options)
	} else {
		data, err = x.SessionIMAP4rev2.Append(mailbox, r, options)
		if err == nil && x.user != nil {
			x.user.visible.add(canonical(mailbox), data.UID, time.Now())
		}
	}
	if err == nil && x.front && x.traits().noUIDPlus {
		data = nil // no APPENDUID
	}
	return data, err
}

func (x *imapSession) Store(w *imapserver.FetchWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) error {
	defer x.changes.notify()
	return x.SessionIMAP4rev2.Store(w, numSet, flags, options)
}

func (x *imapSession) Copy(numSet imap.NumSet, dest string) (*imap.CopyData, error) {
	defer x.changes.notify()
	var src []imap.UID
	if x.gmailBin(dest) {
		src = x.resolve(numSet)
	}
	data, err := x.SessionIMAP4rev2.Copy(numSet, dest)
	if err != nil {
		return nil, err
	}
	if err := x.gmailBinned(src, false); err != nil {
		return nil, err
	}
	if x.front && x.traits().noUIDPlus {
		data = nil // no COPYUID
	}
	return data, nil
}

func (x *imapSession) Move(w *imapserver.MoveWriter, numSet imap.NumSet, dest string) error {
	if x.front && x.traits().noMove {
		return errUnknownCommand
	}
	defer x.changes.notify()
	var src []imap.UID
	if x.gmailBin(dest) {
		src = x.resolve(numSet)
	}
	if err := x.SessionIMAP4rev2.Move(w, numSet, dest); err != nil {
		return err
	}
	return x.gmailBinned(src, true)
}

// broadcast wakes every waiter on each mailbox change.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
