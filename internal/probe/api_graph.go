package probe

import (
	"context"
	"maps"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/graph"
	"github.com/emailqos/emailqosreceiver/internal/imapwatch"
	"github.com/emailqos/emailqosreceiver/internal/restcall"
	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// graphFolders are the folders a probe to a Graph mailbox is looked for in:
// the inbox, and the junk folder, where a probe filed as spam is placement
// junk (mailFolder resource: well-known names).
var graphFolders = []string{graph.FolderInbox, graph.FolderJunk}

// graphMailbox reads a mailbox over Microsoft Graph: a delta query per
// folder, restricted to created messages, from a baseline taken before the
// probe is sent (Graph cannot filter on the probe's custom header, so the
// new messages' internetMessageHeaders are read instead).
type graphMailbox struct {
	*apiMailbox
	c     *graph.Client
	user  string
	links map[string]string
}

// openGraph takes the delta baseline of each folder. When an earlier
// session of this mailbox left its deltaLinks, the messages created since
// are read first (late probes, orphans of the runs in between) and the
// links carry on from there; otherwise the initial round of the delta sync
// skips what is already in the folder.
func openGraph(ctx context.Context, t *Target, r *Account, rec *steps.Recorder, logger *zap.Logger) (mailbox, error) {
	g := &graphMailbox{apiMailbox: newAPIMailbox(r, t, steps.GraphList, rec, logger), c: r.API.Graph, user: r.apiUser(), links: map[string]string{}}
	g.fetchNotice = func(ctx context.Context, id string) ([]byte, error) {
		return g.c.MIME(ctx, g.user, id, imapwatch.MaxNoticeBytes)
	}
	g.position = func() func() {
		links := maps.Clone(g.links)
		return func() { g.links = links }
	}
	g.removeNotice = func(ctx context.Context, id string, move bool, folder string) error {
		if move {
			_, err := g.c.Move(ctx, g.user, id, folder)
			return err
		}
		return g.c.PermanentDelete(ctx, g.user, id)
	}
	r.api.mu.Lock()
	saved := make(map[string]string, len(r.api.graphLinks))
	for f, l := range r.api.graphLinks {
		saved[f] = l
	}
	r.api.mu.Unlock()
	for _, f := range graphFolders {
		if link := saved[f]; link != "" {
			msgs, next, err := g.delta(ctx, f, link)
			if err == nil {
				g.note(msgs)
				g.links[f] = next
				continue
			}
			if !restcall.IsKind(err, restcall.KindResync) {
				return nil, apiFail(ctx, steps.GraphList, steps.CodeMailboxConnect, err, r)
			}
		}
		var link string
		err := g.timed(steps.GraphList, func() (err error) {
			link, err = g.c.Baseline(ctx, g.user, f)
			return err
		})
		if err != nil {
			return nil, apiFail(ctx, steps.GraphList, steps.CodeMailboxConnect, err, r)
		}
		g.links[f] = link
	}
	g.poll = g.pollFolders
	return g, nil
}

func (g *graphMailbox) delta(ctx context.Context, folder, link string) ([]apiMessage, string, error) {
	var msgs []graph.Message
	var next string
	err := g.timed(steps.GraphList, func() (err error) {
		msgs, next, err = g.c.Delta(ctx, link)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	placement := imapwatch.PlacementInbox
	if folder == graph.FolderJunk {
		placement = imapwatch.PlacementJunk
	}
	out := make([]apiMessage, 0, len(msgs))
	for _, m := range msgs {
		if m.Removed != nil || m.ID == "" {
			continue
		}
		hs := m.Headers
		field := func(i int) (string, string) { return hs[i].Name, hs[i].Value }
		out = append(out, apiMessage{id: m.ID, folder: folder, placement: placement, header: headerBlock(len(hs), field),
			report: isReport(len(hs), field), received: m.ReceivedDateTime})
	}
	return out, next, nil
}

// pollFolders reads what each folder's delta gives since the last poll. An
// expired delta link (410, SyncStateNotFound) is replaced by a new
// baseline: what arrived in between is then seen by the next session's
// housekeeping at the latest, not by this wait.
func (g *graphMailbox) pollFolders(ctx context.Context) ([]apiMessage, error) {
	var out []apiMessage
	// The links move on only when every folder was read: a poll cut short
	// (the wait ended during the second folder) is read again whole by the
	// next one, not lost with the first folder's messages.
	links := make(map[string]string, len(graphFolders))
	for _, f := range graphFolders {
		msgs, next, err := g.delta(ctx, f, g.links[f])
		if restcall.IsKind(err, restcall.KindResync) {
			err = g.timed(steps.GraphList, func() (err error) {
				next, err = g.c.Baseline(ctx, g.user, f)
				return err
			})
		}
		if err != nil {
			return nil, err
		}
		links[f] = next
		out = append(out, msgs...)
	}
	for f, l := range links {
		g.links[f] = l
	}
	return out, nil
}

func (g *graphMailbox) Delete(ctx context.Context, a arrival) error {
	return g.DeleteIDs(ctx, []string{a.ID})
}

func (g *graphMailbox) Move(ctx context.Context, a arrival, folder string) error {
	return g.MoveIDs(ctx, []string{a.ID}, folder)
}

// DeleteIDs deletes for good (message-permanentdelete), as IMAP's EXPUNGE
// does; cleanup mode move with folder deleteditems keeps them recoverable.
func (g *graphMailbox) DeleteIDs(ctx context.Context, ids []string) error {
	for _, id := range ids {
		if err := g.timed(steps.GraphDelete, func() error { return g.c.PermanentDelete(ctx, g.user, id) }); err != nil {
			return apiFail(ctx, steps.GraphDelete, steps.CodeCleanup, err, g.acct)
		}
		g.forget(id)
	}
	return nil
}

// MoveIDs moves to folder: a folder id or a well-known name (deleteditems).
func (g *graphMailbox) MoveIDs(ctx context.Context, ids []string, folder string) error {
	for _, id := range ids {
		if err := g.timed(steps.GraphDelete, func() error { _, err := g.c.Move(ctx, g.user, id, folder); return err }); err != nil {
			return apiFail(ctx, steps.GraphDelete, steps.CodeCleanup, err, g.acct)
		}
		g.forget(id)
	}
	return nil
}

// Commands is 0: emailqos.imap.commands counts mailbox protocol commands,
// which an API session sends none of.
func (g *graphMailbox) Commands() int { return 0 }

// Close keeps the session's deltaLinks for the next session; there is no
// connection to end.
func (g *graphMailbox) Close(context.Context) error {
	g.acct.api.mu.Lock()
	defer g.acct.api.mu.Unlock()
	if g.acct.api.graphLinks == nil {
		g.acct.api.graphLinks = map[string]string{}
	}
	for f, l := range g.links {
		g.acct.api.graphLinks[f] = l
	}
	return nil
}
