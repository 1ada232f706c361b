package steps

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
)

// TestEveryStepHasACode fails when a step name declared in steps.go is
// missing from the code table, where it would silently count as a failed
// search.
func TestEveryStepHasACode(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "steps.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Values) != 1 {
			return true
		}
		lit, ok := vs.Values[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		v, _ := strconv.Unquote(lit.Value)
		// Step names are "<protocol or phase>.<step>", e.g. "smtp.connect".
		if strings.Count(v, ".") == 1 && !strings.ContainsAny(v, " :") {
			names = append(names, v)
		}
		return true
	})
	if len(names) < 20 {
		t.Fatalf("found only %d step names in steps.go: %v", len(names), names)
	}
	for _, n := range names {
		if _, ok := codes[n]; !ok {
			t.Errorf("step %q has no code in codes.go", n)
		}
	}
	if len(codes) != len(names) {
		t.Errorf("codes.go has %d steps, steps.go declares %d", len(codes), len(names))
	}
}

func TestFailTakesTheStepsCode(t *testing.T) {
	for step, want := range map[string]int{
		SMTPConnect: CodeSMTPConnect, SMTPSubmit: CodeSMTPSend, IMAPLogin: CodeMailboxConnect,
		DeliveryWait: CodeSearch, POP3Delete: CodeCleanup,
	} {
		if got := Fail(context.Background(), step, TypeProtocol, errTest).Code; got != want {
			t.Errorf("Fail(%s).Code = %d, want %d", step, got, want)
		}
	}
	if got := FailCode(context.Background(), POP3List, PollCode(TypeRejected), "", errTest).Code; got != CodeSearch {
		t.Errorf("a refused poll: code %d, want %d", got, CodeSearch)
	}
	if got := PollCode(TypeConnect); got != CodeMailboxConnect {
		t.Errorf("a lost poll: code %d, want %d", got, CodeMailboxConnect)
	}
}

var errTest = errors.New("test")
