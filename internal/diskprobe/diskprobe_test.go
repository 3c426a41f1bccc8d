package diskprobe

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	p := Start(dir)
	time.Sleep(300 * time.Millisecond)
	res, err := p.Stop()
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	// The probe's clock starts once its file is preallocated, and ticks are
	// dropped while a sync is slow, so a slow disk gives fewer writes over
	// less than the 300 ms slept; a probe that does not wait for its ticks
	// gives more than the interval allows.
	most := int(elapsed/Interval) + 1
	if res.Dir != dir || len(res.Writes) < 1 || len(res.Writes) > most || res.Elapsed <= 0 || res.Elapsed > elapsed {
		t.Errorf("after %v (at most %d writes): dir %s, %d writes over %v", elapsed, most, res.Dir, len(res.Writes), res.Elapsed)
	}
	for i, w := range res.Writes {
		if w.Took() <= 0 || (i > 0 && w.Start.Before(res.Writes[i-1].End)) {
			t.Fatalf("write %d: %v after %v: not one after another", i, w, res.Writes[max(i-1, 0)])
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("the probe left %d files in %s", len(left), dir)
	}

	if _, err := Start(filepath.Join(dir, "missing")).Stop(); err == nil {
		t.Error("a probe in a missing directory reported no error")
	}
}

func TestStalls(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(from, to int) Span {
		return Span{t0.Add(time.Duration(from) * time.Millisecond), t0.Add(time.Duration(to) * time.Millisecond)}
	}
	r := Result{Elapsed: time.Second, Writes: []Span{at(0, 5), at(10, 30), at(40, 60), at(70, 71), at(80, 180)}}
	if got, want := r.Over(20*time.Millisecond), []Span{at(80, 180)}; !slices.Equal(got, want) {
		t.Errorf("over 20 ms: %v, want %v (exactly 20 ms is not over)", got, want)
	}
	if got := r.Stalled(20 * time.Millisecond); got != 80*time.Millisecond {
		t.Errorf("stalled past 20 ms: %v, want 80ms", got)
	}
	if got := r.Stalled(10 * time.Millisecond); got != 110*time.Millisecond {
		t.Errorf("stalled past 10 ms: %v, want 10+10+90 ms = 110ms", got)
	}
	if got := r.StalledPercent(20 * time.Millisecond); got != 8 {
		t.Errorf("stalled percent: %v, want 8", got)
	}
	if got := (Result{}).StalledPercent(time.Millisecond); got != 0 {
		t.Errorf("stalled percent of nothing measured: %v", got)
	}
}

func TestOverlapping(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(from, to int) Span {
		return Span{t0.Add(time.Duration(from) * time.Millisecond), t0.Add(time.Duration(to) * time.Millisecond)}
	}
	stalls := []Span{at(100, 200), at(500, 560), at(1000, 1400)}
	for _, tc := range []struct {
		x    Span
		want int
	}{
		{at(0, 60), 0},      // before every stall
		{at(50, 110), 1},    // into the first
		{at(150, 210), 1},   // inside it, past its end
		{at(200, 260), 0},   // starts as it ends
		{at(40, 100), 0},    // ends as it starts
		{at(300, 360), 0},   // between stalls
		{at(540, 600), 1},   // out of the second
		{at(1100, 1160), 1}, // inside the third
		{at(0, 2000), 1},    // across all: one span, counted once
		{at(1500, 1560), 0}, // after every stall
	} {
		if got := Overlapping([]Span{tc.x}, stalls); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.x, got, tc.want)
		}
	}
	if got := Overlapping([]Span{at(50, 110), at(150, 210), at(300, 360)}, stalls); got != 2 {
		t.Errorf("three spans: %d overlap, want 2", got)
	}
	if got := Overlapping([]Span{at(50, 110)}, nil); got != 0 {
		t.Errorf("no stalls: %d", got)
	}
}
