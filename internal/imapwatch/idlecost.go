package imapwatch

import "time"

// minIdleLead is the least time before auto's dense polls start for which
// auto starts an IDLE (issue 17). A shorter IDLE costs its command and
// its DONE and buys nothing: the dense polls see any arrival of the lead
// within one precise interval of its start anyway, and a server that holds
// its announcements (Dovecot 2.3: 0.5 s, mailbox-watch.c's
// NOTIFY_DELAY_MSECS, measured in BENCHMARKS.md) cannot announce one in it
// at all.
const minIdleLead = 500 * time.Millisecond

// idleBuysNothing reports whether auto should not start an IDLE now
// because its dense polls start within minIdleLead: at from (counted from
// the end of DATA) when floor is zero (Open, before the send), else at
// floor+from.
func (s *Session) idleBuysNothing(now, floor time.Time) bool {
	if s.opts.Method != MethodAuto {
		return false
	}
	from, _, _ := s.learner.DenseWindow()
	if floor.IsZero() {
		return from < minIdleLead
	}
	start := floor.Add(from)
	return now.Before(start) && start.Sub(now) < minIdleLead
}
