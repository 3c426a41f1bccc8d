package chaos

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The duplicate checks read what the agent writes: a journal line per
// recorded task, a "task succeeded" or "task failed" log line per apply.
func TestTaskRecordsParse(t *testing.T) {
	dir := t.TempDir()
	journal := filepath.Join(dir, "journal")
	if err := os.WriteFile(journal, []byte(`{"id":"A","status":"SUCCEEDED","generation":1,"finished":5}
{"id":"B","status":"FAILED","error":"x","generation":1,"finished":7}
{"id":"A","status":"SUCCEEDED","generation":1,"finished":9}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ents, err := journalEntries(journal)
	if err != nil || len(ents) != 3 || ents[2].ID != "A" || ents[2].Finished != 9 {
		t.Fatalf("journal: %+v, %v", ents, err)
	}
	log := filepath.Join(dir, "agent.log")
	if err := os.WriteFile(log, []byte(`{"time":"t","level":"DEBUG","msg":"task succeeded","node":"n","task":"A","action":"ensure_account","took":1}
{"time":"t","level":"WARN","msg":"task failed","node":"n","task":"A","action":"ensure_account","reason":5,"err":"e"}
{"time":"t","level":"DEBUG","msg":"web commit","node":"n","task":"B"}
{"time":"t","level":"DEBUG","msg":"task succeeded","node":"n","task":"B","action":"ping","took":1}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	applied, err := appliedTasks(log)
	if err != nil || applied["A"] != 2 || applied["B"] != 1 || len(applied) != 2 {
		t.Fatalf("applied: %v, %v", applied, err)
	}
}

// The partition proxy stalls both ways without closing, and delivers what
// was held once healed.
func TestBlackhole(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := c.Write(append(sc.Bytes(), '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
	b, err := newBlackhole("127.0.0.1:0", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	echo := func(msg string, wantAnswer bool) {
		t.Helper()
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			t.Fatal(err)
		}
		// An answer may take long on a loaded machine; a cut link must
		// hold the message however long one waits.
		wait := 10 * time.Second
		if !wantAnswer {
			wait = 300 * time.Millisecond
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		line, err := r.ReadString('\n')
		if wantAnswer && (err != nil || line != msg+"\n") {
			t.Fatalf("echo %q: %q, %v", msg, line, err)
		}
		if !wantAnswer {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Fatalf("cut link answered %q, %v", line, err)
			}
		}
	}
	echo("one", true)
	b.Cut()
	echo("two", false)
	b.Heal()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "two\n" {
		t.Fatalf("held message after heal: %q, %v", line, err)
	}
	echo("three", true)
}
