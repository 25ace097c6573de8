package clock

import (
	"testing"
	"time"
)

func TestSystem(t *testing.T) {
	before := time.Now()
	if now := System.Now(); now.Before(before) {
		t.Fatalf("Now() = %v, before %v", now, before)
	}
	fired := make(chan struct{})
	System.AfterFunc(0, func() { close(fired) })
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		t.Fatal("AfterFunc(0) did not fire within 10s")
	}
	late := System.AfterFunc(time.Hour, func() { t.Error("stopped timer fired") })
	if !late.Stop() {
		t.Fatal("Stop of an armed timer returned false")
	}
}
