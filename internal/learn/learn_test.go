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

// Issue 17, a 5 s relay on Dovecot: the first probe polls densely for 2 s,
// then idles, and IDLE shows the arrival at 5.5 s. That window's lower
// bound must not hold the dense polls at 2 s (capped at maxDense, they
// would end before the arrival, for as long as it is remembered).
func TestDenseWindowIgnoresLooseLowerBounds(t *testing.T) {
	var l Learner
	l.Observe(FirstDense, 5500*time.Millisecond)
	l.Observe(4880*time.Millisecond, 5500*time.Millisecond) // missed by [1.88, 4.88], seen over IDLE
	from, to, _ := l.DenseWindow()
	if from > 5*time.Second || to < 5010*time.Millisecond || from < 4*time.Second {
		t.Fatalf("[%v, %v] after the IDLE window [4.88s, 5.5s], want it around 5s", from, to)
	}
	l.Observe(5*time.Second, 5010*time.Millisecond) // the dense polls caught it
	from, _, _ = l.DenseWindow()
	if want := 5*time.Second - earlyMargin - 250*time.Millisecond; from != want {
		t.Fatalf("from %v after a dense arrival at 5s, want %v", from, want)
	}

	// Arrivals that moved earlier: a wide window newer than the narrow
	// ones lowers the start to its middle.
	var e Learner
	for range 3 {
		e.Observe(time.Second, 1010*time.Millisecond)
	}
	e.Observe(300*time.Millisecond, 930*time.Millisecond)
	if from, _, _ := e.DenseWindow(); from > 615*time.Millisecond-earlyMargin {
		t.Fatalf("from %v: the earlier arrival in [0.3s, 0.93s] was not taken into account", from)
	}
}
