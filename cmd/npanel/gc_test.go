package main

import "testing"

func TestAvailableMemory(t *testing.T) {
	// Every Linux machine this runs on has /proc/meminfo; a cgroup limit,
	// when set, is at most the machine's memory.
	if m := availableMemory(); m < 64<<20 {
		t.Fatalf("available memory %d bytes", m)
	}
}
