package mailtest

import "testing"

// The two users every mail system started by StartT has, with their
// passwords: the receiver's and the engine's tests share them.
const (
	Alice         = "alice@a.test"
	AlicePassword = "alice-pw"
	Bob           = "bob@b.test"
	BobPassword   = "bob-pw"
)

// StartT starts an in-process mail system for a test, with Alice and Bob
// added to opts.Users; it fails t on error and closes the system (and
// checks that it closed cleanly) when t ends.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	opts.Users = append(opts.Users,
		User{Address: Alice, Password: AlicePassword},
		User{Address: Bob, Password: BobPassword})
	srv, err := Start(opts)
	if err != nil {
		t.Fatalf("mailtest: start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("mailtest: close: %v", err)
		}
	})
	return srv
}
