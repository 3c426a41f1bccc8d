package mail_test

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// bayesMagic returns nspam and nham of a Bayes database directory, read
// with sa-learn as spamd's user; 0, 0 when it has none.
func (s *stack) bayesMagic(t *testing.T, dir string) (int, int) {
	t.Helper()
	mp := s.p.Mail()
	if _, err := os.Stat(filepath.Join(dir, "bayes_toks")); err != nil {
		return 0, 0
	}
	u, err := user.Lookup(mp.SpamdUser)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd := exec.Command(mp.SaLearn, "--dump", "magic", "--dbpath", dir)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + filepath.Join(mp.SpamdDir, "home")}
	cmd.Dir = filepath.Join(mp.SpamdDir, "home")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sa-learn --dump magic: %v: %s", err, out)
	}
	num := func(what string) int {
		m := regexp.MustCompile(`0\.000\s+0\s+(\d+)\s+0\s+non-token data: ` + what).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no %s in:\n%s", what, out)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	return num("nspam"), num("nham")
}

// TestBayesPerAccount: trainSpam in account A's mailbox goes to A's Bayes
// database only, and spamd scores mail to each account's domain with that
// account's database (the user Exim names to spamd).
func TestBayesPerAccount(t *testing.T) {
	s := startStackWith(t, false)
	mp := s.p.Mail()
	testenv.RequireDaemon(t, mp.Spamd)
	testenv.RequireDaemon(t, mp.SaLearn)
	type acct struct{ user, dom, addr string }
	var as []acct
	for _, local := range []string{"alice", "bob"} {
		a := acct{user: s.newAccount(t), dom: randomDomain(t)}
		a.addr = local + "@" + a.dom
		s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: a.user, Domain: a.dom,
			Spam: &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 50, Action: agentpb.MailSpamAction_MAIL_SPAM_ACTION_TAG}})
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: a.user, Address: a.addr, SealedPassword: s.seal(t, a.addr, pwAlice), QuotaMb: 50})
		if err := s.deliver("x@elsewhere.example.org", []string{a.addr}, message("x@elsewhere.example.org", a.addr, "cheap pills", "buy cheap pills now, limited offer")); err != nil {
			t.Fatalf("deliver to %s: %v", a.addr, err)
		}
		s.waitMessages(t, a.addr, pwAlice, "INBOX", 1)
		as = append(as, a)
	}
	a, b := as[0], as[1]
	t.Run("SpamdUsesTheAccountsDatabase", func(t *testing.T) {
		// spamd logs the directory it took for the user Exim named.
		testenv.WaitFor(t, 10*time.Second, "spamd log lines for both accounts", func() bool {
			log, _ := os.ReadFile(filepath.Join(mp.SpamdDir, "spamd.log"))
			for _, x := range as {
				if !strings.Contains(string(log), "using default config for "+x.user+": "+filepath.Join(mp.SpamdBayesDir, x.user, "user_prefs")) {
					return false
				}
			}
			return true
		})
	})
	t.Run("TrainingStaysInTheAccount", func(t *testing.T) {
		// spamd may have auto-learned each delivered message as ham, in
		// its account's database: compare with where they stand now.
		dbA, dbB := filepath.Join(mp.SpamdBayesDir, a.user), filepath.Join(mp.SpamdBayesDir, b.user)
		spamA, _ := s.bayesMagic(t, dbA)
		spamB, hamB := s.bayesMagic(t, dbB)
		r := s.must(t, s.mod.NewTrainMail(&agentpb.TrainMailAction{Username: a.user, Address: a.addr, Uid: 1, Spam: true})).(*agentpb.TrainMailResult)
		if !r.Learned {
			t.Fatal("sa-learn learned nothing")
		}
		if nspam, _ := s.bayesMagic(t, dbA); nspam != spamA+1 {
			t.Fatalf("A's database: nspam %d, want %d", nspam, spamA+1)
		}
		if nspam, nham := s.bayesMagic(t, dbB); nspam != spamB || nham != hamB {
			t.Fatalf("B's database changed by A's training: nspam %d nham %d, was %d %d", nspam, nham, spamB, hamB)
		}
		if nspam, _ := s.bayesMagic(t, filepath.Join(mp.SpamdDir, "home", ".spamassassin")); nspam != 0 {
			t.Fatalf("the shared database was trained: nspam %d", nspam)
		}
		spamA, hamA := s.bayesMagic(t, dbA)
		r = s.must(t, s.mod.NewTrainMail(&agentpb.TrainMailAction{Username: b.user, Address: b.addr, Uid: 1, Spam: true})).(*agentpb.TrainMailResult)
		if !r.Learned {
			t.Fatal("sa-learn learned nothing for B")
		}
		if nspam, _ := s.bayesMagic(t, dbB); nspam != spamB+1 {
			t.Fatalf("B's database: nspam %d, want %d", nspam, spamB+1)
		}
		if nspam, nham := s.bayesMagic(t, dbA); nspam != spamA || nham != hamA {
			t.Fatalf("A's database changed by B's training: nspam %d nham %d, was %d %d", nspam, nham, spamA, hamA)
		}
	})
}
