package learn

import (
	"testing"
	"time"
)

func TestDenseWindow(t *testing.T) {
	var l Learner
	if from, to, learned := l.DenseWindow(); learned || from != 0 || to != FirstDense {
		t.Fatalf("no history: [%v, %v] learned %v, want [0, %v] not learned", from, to, learned, FirstDense)
	}
	l.Observe(time.Second, time.Second+5*time.Millisecond)
	l.Observe(1010*time.Millisecond, 1012*time.Millisecond)
	from, to, learned := l.DenseWindow()
	if !learned {
		t.Fatal("not learned after two arrivals")
	}
	// Opens 20ms + 1/20 before the earliest lower bound, closes 250ms or
	// a quarter of the latest upper bound after it.
	if want := time.Second - 20*time.Millisecond - 50*time.Millisecond; from != want {
		t.Fatalf("from %v, want %v", from, want)
	}
	if want := 1012*time.Millisecond + 253*time.Millisecond; to != want {
		t.Fatalf("to %v, want %v", to, want)
	}

	// Only the last 8 windows count: the early outlier is forgotten.
	var k Learner
	k.Observe(0, time.Millisecond)
	for range keep {
		k.Observe(2*time.Second, 2*time.Second)
	}
	if from, _, _ := k.DenseWindow(); from < time.Second {
		t.Fatalf("from %v: the oldest arrival was not forgotten", from)
	}

	// A wide spread is capped at maxDense.
	var w Learner
	w.Observe(100*time.Millisecond, 100*time.Millisecond)
	w.Observe(30*time.Second, 30*time.Second)
	if from, to, _ := w.DenseWindow(); to-from != maxDense {
		t.Fatalf("[%v, %v]: not capped at %v", from, to, maxDense)
	}

	// Negative bounds (a clock step) count as 0.
	var n Learner
	n.Observe(-time.Second, -time.Millisecond)
	if from, to, _ := n.DenseWindow(); from != 0 || to != lateMargin {
		t.Fatalf("[%v, %v], want [0, %v]", from, to, lateMargin)
	}
}

func TestIdleTrust(t *testing.T) {
	var l Learner
	if l.IdleSeen(false) || l.IdleUntrusted() {
		t.Fatal("one silent arrival made IDLE untrusted")
	}
	if !l.IdleSeen(false) || !l.IdleUntrusted() {
		t.Fatal("two silent arrivals and no announcement: IDLE still trusted")
	}
	if l.IdleSeen(false) {
		t.Fatal("reported the change twice")
	}
	l.IdleSeen(true)
	if l.IdleUntrusted() {
		t.Fatal("an announcement did not restore the trust")
	}

	var p Learner
	p.IdleSeen(true)
	p.IdleSeen(false)
	p.IdleSeen(false)
	p.IdleSeen(false)
	if p.IdleUntrusted() {
		t.Fatal("an IDLE that announced once was distrusted")
	}
}
