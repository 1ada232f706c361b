package main

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRefusesNonLoopback(t *testing.T) {
	for _, args := range [][]string{
		{"-smtp", "0.0.0.0:0", "-imap", "127.0.0.1:0"},
		{"-smtp", "127.0.0.1:0", "-imap", ":0"},
	} {
		assert.ErrorContains(t, run(context.Background(), args, &bytes.Buffer{}), "non-loopback", args)
	}
}

func TestRunsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	go func() {
		done <- run(ctx, []string{"-smtp", "127.0.0.1:0", "-imap", "127.0.0.1:0", "-tls", "-ca-out", ca}, &out)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
	assert.Contains(t, out.String(), "alice@demo.test")
	assert.Contains(t, out.String(), "IMAPS 127.0.0.1:")
	assert.FileExists(t, ca)
}

func TestFaultFlag(t *testing.T) {
	err := run(context.Background(), []string{"-smtp", "127.0.0.1:0", "-imap", "127.0.0.1:0", "-fault", "nonsense"}, &bytes.Buffer{})
	assert.ErrorContains(t, err, `-fault "nonsense"`)
	assert.ErrorContains(t, err, "smtp-auth")

	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-smtp", "127.0.0.1:0", "-imap", "127.0.0.1:0", "-fault", "smtp-auth"}, &out)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
	assert.Contains(t, out.String(), "FAULT smtp-auth (after 0s): SMTP AUTH refused")
	assert.ErrorContains(t, run(context.Background(), []string{"-fault-after", "1s"}, &bytes.Buffer{}), "-fault-after needs -fault")
}
