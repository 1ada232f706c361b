package probe // import "github.com/emailqos/emailqosreceiver/internal/probe"

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/emailqos/emailqosreceiver/internal/steps"
)

// openPOP3 is replaced when POP3 retrieval is wired in.
func openPOP3(ctx context.Context, _ *Target, _ *zap.Logger, _ *steps.Recorder) (mailbox, error) {
	return nil, steps.Fail(ctx, steps.POP3Connect, steps.CodeInvalidInstance, steps.TypeConfig, errors.New("pop3 retrieval is not available"))
}
