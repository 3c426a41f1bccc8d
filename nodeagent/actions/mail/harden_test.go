package mail

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// within runs f and fails the test when it takes longer than d (a FIFO
// that blocks the agent, an allocation that does not end).
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("did not return within %v", d)
	}
}

// newHome makes an account home with one mailbox's maildir,
// mail/example.com/bob/Maildir/{cur,new,tmp}, and returns the home and
// the maildir.
func newHome(t *testing.T) (home, md string) {
	t.Helper()
	home = t.TempDir()
	md = filepath.Join(home, mailHomeRel("example.com", "bob"), "Maildir")
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(md, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return home, md
}

func TestUsageOfHostileMaildirsize(t *testing.T) {
	cases := map[string]struct {
		setup     func(t *testing.T, md string)
		used, msg uint64
	}{
		"regular": {setup: func(t *testing.T, md string) {
			writeFile(t, filepath.Join(md, "maildirsize"), "1048576S\n100 2\n50 1\n")
		}, used: 150, msg: 3},
		"missing": {setup: func(t *testing.T, md string) {}},
		"symlink to /dev/zero": {setup: func(t *testing.T, md string) {
			symlink(t, "/dev/zero", filepath.Join(md, "maildirsize"))
		}},
		"symlink to a file outside": {setup: func(t *testing.T, md string) {
			out := filepath.Join(t.TempDir(), "x")
			writeFile(t, out, "0S\n100 2\n")
			symlink(t, out, filepath.Join(md, "maildirsize"))
		}},
		"fifo": {setup: func(t *testing.T, md string) {
			if err := syscall.Mkfifo(filepath.Join(md, "maildirsize"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		"directory": {setup: func(t *testing.T, md string) {
			if err := os.Mkdir(filepath.Join(md, "maildirsize"), 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		"huge": {setup: func(t *testing.T, md string) {
			writeFile(t, filepath.Join(md, "maildirsize"), "0S\n"+strings.Repeat("100 1\n", maxMaildirsize/6+10))
		}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			home, md := newHome(t)
			c.setup(t, md)
			var u *agentpb.MailboxUsage
			within(t, 5*time.Second, func() { u = usageOf(home, mailHomeRel("example.com", "bob")) })
			if !u.Exists || u.UsedBytes != c.used || u.Messages != c.msg {
				t.Errorf("usage = %v, want exists, %d bytes, %d messages", u, c.used, c.msg)
			}
		})
	}
}

// A maildir (or any level above it) that is a symlink reads as no mailbox:
// the agent never follows it out of the home or to another mailbox.
func TestMaildirSymlinkRefused(t *testing.T) {
	victim := t.TempDir()
	for _, d := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(victim, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(victim, "maildirsize"), "0S\n999 9\n")
	writeFile(t, filepath.Join(victim, "dovecot-uidlist"), "3 V1 N2\n1 :secret\n")
	writeFile(t, filepath.Join(victim, "cur", "secret:2,S"), "Subject: victim's mail\n\nsecret\n")

	cases := map[string]func(t *testing.T, home string){
		"Maildir to another directory": func(t *testing.T, home string) {
			symlink(t, victim, filepath.Join(home, "mail/example.com/bob/Maildir"))
		},
		"Maildir to root": func(t *testing.T, home string) {
			symlink(t, "/", filepath.Join(home, "mail/example.com/bob/Maildir"))
		},
		"Maildir to another mailbox in the home": func(t *testing.T, home string) {
			other := filepath.Join(home, "mail/example.com/carol/Maildir")
			if err := os.MkdirAll(other, 0o700); err != nil {
				t.Fatal(err)
			}
			symlink(t, other, filepath.Join(home, "mail/example.com/bob/Maildir"))
		},
		"mailbox home to another directory": func(t *testing.T, home string) {
			if err := os.RemoveAll(filepath.Join(home, "mail/example.com/bob")); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(victim, "Maildir"), 0o700); err == nil {
				t.Cleanup(func() { os.Remove(filepath.Join(victim, "Maildir")) })
			}
			symlink(t, victim, filepath.Join(home, "mail/example.com/bob"))
		},
		"Maildir is a file": func(t *testing.T, home string) {
			writeFile(t, filepath.Join(home, "mail/example.com/bob/Maildir"), "x")
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			home := t.TempDir()
			if err := os.MkdirAll(filepath.Join(home, "mail/example.com/bob"), 0o700); err != nil {
				t.Fatal(err)
			}
			setup(t, home)
			md, err := openAccountMaildir(home, "example.com", "bob", "bob@example.com")
			if err == nil {
				md.Close()
				t.Fatal("opened a maildir that is not a real directory in the home")
			}
			if r := actions.ReasonOf(err); r != agentpb.ErrorReason_ERROR_REASON_NOT_FOUND {
				t.Errorf("reason %v, want NOT_FOUND: %v", r, err)
			}
			if u := usageOf(home, mailHomeRel("example.com", "bob")); u.Exists || u.UsedBytes != 0 {
				t.Errorf("usage through a symlink: %v", u)
			}
		})
	}
}

// messageByUID reads dovecot-uidlist and opens the message as regular
// files in the maildir only.
func TestMessageByUIDHostile(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "outside")
	writeFile(t, outside, "Subject: not yours\n\n")
	cases := map[string]struct {
		setup  func(t *testing.T, md string)
		reason agentpb.ErrorReason // 0: found
	}{
		"regular": {setup: func(t *testing.T, md string) {
			writeFile(t, filepath.Join(md, "dovecot-uidlist"), "3 V1 N2\n1 :m1\n")
			writeFile(t, filepath.Join(md, "cur", "m1:2,S"), "Subject: hi\n\n")
		}},
		"uidlist symlink to /dev/zero": {setup: func(t *testing.T, md string) {
			symlink(t, "/dev/zero", filepath.Join(md, "dovecot-uidlist"))
		}, reason: agentpb.ErrorReason_ERROR_REASON_NOT_FOUND},
		"uidlist fifo": {setup: func(t *testing.T, md string) {
			if err := syscall.Mkfifo(filepath.Join(md, "dovecot-uidlist"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, reason: agentpb.ErrorReason_ERROR_REASON_NOT_FOUND},
		"uidlist symlink outside": {setup: func(t *testing.T, md string) {
			u := filepath.Join(t.TempDir(), "uidlist")
			writeFile(t, u, "3 V1 N2\n1 :m1\n")
			symlink(t, u, filepath.Join(md, "dovecot-uidlist"))
			writeFile(t, filepath.Join(md, "cur", "m1:2,S"), "x")
		}, reason: agentpb.ErrorReason_ERROR_REASON_NOT_FOUND},
		"message symlink outside": {setup: func(t *testing.T, md string) {
			writeFile(t, filepath.Join(md, "dovecot-uidlist"), "3 V1 N2\n1 :m1\n")
			symlink(t, outside, filepath.Join(md, "cur", "m1:2,S"))
		}, reason: agentpb.ErrorReason_ERROR_REASON_INVALID},
		"message fifo": {setup: func(t *testing.T, md string) {
			writeFile(t, filepath.Join(md, "dovecot-uidlist"), "3 V1 N2\n1 :m1\n")
			if err := syscall.Mkfifo(filepath.Join(md, "new", "m1"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, reason: agentpb.ErrorReason_ERROR_REASON_INVALID},
		"cur symlink outside": {setup: func(t *testing.T, md string) {
			writeFile(t, filepath.Join(md, "dovecot-uidlist"), "3 V1 N2\n1 :outside\n")
			if err := os.Remove(filepath.Join(md, "cur")); err != nil {
				t.Fatal(err)
			}
			symlink(t, filepath.Dir(outside), filepath.Join(md, "cur"))
		}, reason: agentpb.ErrorReason_ERROR_REASON_NOT_FOUND},
		"traversal in uidlist": {setup: func(t *testing.T, md string) {
			writeFile(t, filepath.Join(md, "dovecot-uidlist"), "3 V1 N2\n1 :../../x\n")
		}, reason: agentpb.ErrorReason_ERROR_REASON_NOT_FOUND},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			home, md := newHome(t)
			c.setup(t, md)
			r, err := openAccountMaildir(home, "example.com", "bob", "bob@example.com")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var f *os.File
			within(t, 5*time.Second, func() { f, err = messageByUID(r, 1) })
			if c.reason == 0 {
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if b, _ := io.ReadAll(f); string(b) != "Subject: hi\n\n" {
					t.Errorf("read %q", b)
				}
				return
			}
			if err == nil {
				f.Close()
				t.Fatal("opened")
			}
			if got := actions.ReasonOf(err); got != c.reason {
				t.Errorf("reason %v, want %v: %v", got, c.reason, err)
			}
		})
	}
}

// The log search matches the address as a whole token only.
func TestMentionsAddress(t *testing.T) {
	const addr = "ceo@b.co"
	cases := map[string]bool{
		"2026-12-05 10:00:00 1abc-000 <= ceo@b.co H=x [1.2.3.4] P=esmtpsa":           true,
		"2026-12-05 10:00:00 1abc-000 => ceo <ceo@b.co> R=local_user T=dovecot_lmtp": true,
		"2026-12-05 10:00:00 1abc-000 ** x@y.org <x@y.org>: ... for ceo@b.co":        true,
		"2026-12-05 10:00:00 H=x rejected RCPT <x@y.org>: F=<ceo@b.co> rejected":     true,
		"Dec 05 10:00:00 imap-login: Login: user=<ceo@b.co>, method=PLAIN":           true,
		"Dec 05 10:00:00 lmtp(ceo@b.co)<123><abc>: sieve: stored mail into INBOX":    true,
		"Dec 05 10:00:00 auth: passwd-file(\"CEO@B.CO\",1.2.3.4): unknown user":      true,
		"ceo@b.co":    true,
		"x ceo@b.co:": true,
		"2026-12-05 10:00:00 1abc-000 <= ceo@b.com H=x [1.2.3.4] P=esmtpsa":           false,
		"2026-12-05 10:00:00 1abc-000 => ceo <ceo@b.com> R=local_user T=dovecot_lmtp": false,
		"2026-12-05 10:00:00 H=x F=<ceo@b.com> rejected":                              false,
		"Dec 05 10:00:00 imap-login: Login: user=<ceo@b.com>, method=PLAIN":           false,
		"Dec 05 10:00:00 lmtp(ceo@b.com)<123><abc>: saved":                            false,
		"Dec 05 10:00:00 lmtp(xceo@b.co)<123><abc>: saved":                            false,
		"Dec 05 10:00:00 lmtp(ceo@b.co.uk)<123>: saved":                               false,
		"for ceo@b.com and ceo@b.cox":                                                 false,
		"":                                                                            false,
	}
	for line, want := range cases {
		if got := mentionsAddress(strings.ToLower(line), addr); got != want {
			t.Errorf("%q: %v, want %v", line, got, want)
		}
	}
	// Through grepLog, on a file with lines of both addresses.
	now := time.Now().Format("2006-01-02 15:04:05")
	f := filepath.Join(t.TempDir(), "mainlog")
	writeFile(t, f, now+" 1a <= ceo@b.co H=x\n"+now+" 1b <= ceo@b.com H=x\n"+now+" 1c => ceo <ceo@b.com> R=r\n"+now+" 1d => ceo <CEO@b.co> R=r\n")
	ls, err := grepLog(t.Context(), f, addr, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || !strings.Contains(ls[0].text, " 1a ") || !strings.Contains(ls[1].text, " 1d ") {
		t.Errorf("grepLog = %v, want the 1a and 1d lines", ls)
	}
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

// fakeClamd answers INSTREAM: FOUND when the stream holds "VIRUS". It
// records every stream it was sent.
func fakeClamd(t *testing.T) (sock string, streams func() []string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "clamd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var seen []string
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			if cmd, err := br.ReadString(0); err != nil || cmd != "zINSTREAM\x00" {
				c.Close()
				continue
			}
			var body []byte
			for {
				var hdr [4]byte
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					break
				}
				n := binary.BigEndian.Uint32(hdr[:])
				if n == 0 {
					break
				}
				chunk := make([]byte, n)
				if _, err := io.ReadFull(br, chunk); err != nil {
					break
				}
				body = append(body, chunk...)
			}
			mu.Lock()
			seen = append(seen, string(body))
			mu.Unlock()
			reply := "stream: OK\x00"
			if strings.Contains(string(body), "VIRUS") {
				reply = "stream: Test.Sig FOUND\x00"
			}
			_, _ = c.Write([]byte(reply))
			c.Close()
		}
	}()
	return sock, func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(seen) }
}

// ScanMailbox's walk reads regular message files of the maildir only:
// no symlinked message or folder, no FIFO.
func TestScanMaildirStaysInside(t *testing.T) {
	home, md := newHome(t)
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "secret"), "OUTSIDE VIRUS")
	if err := os.MkdirAll(filepath.Join(outside, "cur"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(outside, "cur", "theirs:2,S"), "OUTSIDE folder mail")

	writeFile(t, filepath.Join(md, "cur", "m1:2,S"), "clean")
	writeFile(t, filepath.Join(md, "new", "m2"), "a VIRUS")
	symlink(t, filepath.Join(outside, "secret"), filepath.Join(md, "cur", "link:2,S"))
	symlink(t, outside, filepath.Join(md, ".Folder"))
	if err := syscall.Mkfifo(filepath.Join(md, "new", "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock, streams := fakeClamd(t)
	r, err := openAccountMaildir(home, "example.com", "bob", "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var res *agentpb.ScanMailboxResult
	within(t, 10*time.Second, func() { res, err = scanMaildir(t.Context(), r, sock) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Scanned != 2 || len(res.Infected) != 1 || res.Infected[0].Message != "m2" {
		t.Errorf("result %v, want 2 scanned, m2 infected", res)
	}
	for _, s := range streams() {
		if strings.Contains(s, "OUTSIDE") {
			t.Errorf("clamd was sent a file outside the maildir: %q", s)
		}
	}
}
