package steps

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
)

func TestClassifyFlattenedConnectionErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("wrapped: %w", syscall.ECONNRESET), TypeConnect},
		// go-imap formats the cause with %v: only the text is left.
		{fmt.Errorf("in response: cannot read tag: %v", fmt.Errorf("read tcp 127.0.0.1:1->127.0.0.1:2: read: %w", syscall.ECONNRESET)), TypeConnect},
		{fmt.Errorf("in response: %v", io.EOF), TypeConnect},
		{fmt.Errorf("in response: %v", io.ErrUnexpectedEOF), TypeConnect},
		{fmt.Errorf("in response: %v", syscall.EPIPE), TypeConnect},
		{errors.New("imapwire: expected CRLF, got \"3\""), TypeProtocol},
		{errors.New("EOF marker missing in the server's greeting"), TypeProtocol},
	} {
		if got := Classify(tc.err); got != tc.want {
			t.Errorf("Classify(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
