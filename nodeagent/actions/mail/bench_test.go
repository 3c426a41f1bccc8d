package mail_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/npanel/npanel/internal/benchstat"
	"github.com/npanel/npanel/protos/agentpb"
)

// BenchmarkEnsureMailbox is the agent's step for a new mailbox (unseal,
// bcrypt at the module's cost, maildir, passwd-file and Exim list written
// atomically); BenchmarkPasswdLineByHand is the same hash plus appending
// the line by hand, the floor to compare it with.
func BenchmarkEnsureMailbox(b *testing.B) {
	s := startStack(b)
	acct := s.newAccount(b)
	dom := randomDomain(b)
	s.ensureDomain(b, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	reqs := make([]*agentpb.EnsureMailboxAction, b.N)
	for i := range reqs {
		a := fmt.Sprintf("u%d@%s", i, dom)
		reqs[i] = &agentpb.EnsureMailboxAction{Username: acct, Address: a, SealedPassword: s.seal(b, a, "Quartz-Lantern-481"), QuotaMb: 100}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.ensureMailbox(b, reqs[i])
	}
}

func BenchmarkPasswdLineByHand(b *testing.B) {
	dir := b.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, "passwd"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, err := bcrypt.GenerateFromPassword([]byte("Quartz-Lantern-481"), 10)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(f, "u%d:{BLF-CRYPT}%s:1000:1000::/home/x/mail/d/u%d::userdb_quota_rule=*:storage=100M\n", i, h, i)
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIMAPLogin logs in over IMAPS at bcrypt cost 10 (the module's)
// and 14 (the seed's), cold (auth cache flushed before each login) and
// cached.
func BenchmarkIMAPLogin(b *testing.B) {
	s := startStack(b)
	acct := s.newAccount(b)
	dom := randomDomain(b)
	s.ensureDomain(b, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	const pw = "Quartz-Lantern-481"
	for _, cost := range []int{10, 14} {
		s.mod.BcryptCost = cost
		a := fmt.Sprintf("cost%d@%s", cost, dom)
		s.ensureMailbox(b, &agentpb.EnsureMailboxAction{Username: acct, Address: a, SealedPassword: s.seal(b, a, pw), QuotaMb: 100})
		time.Sleep(1100 * time.Millisecond) // Dovecot re-reads passwd-files once a second
		mp := s.p.Mail()
		for _, cold := range []bool{true, false} {
			b.Run(fmt.Sprintf("cost=%d/cold=%v", cost, cold), func(b *testing.B) {
				if ic, err := s.imapLogin(a, pw); err == nil {
					ic.close() // warm the cache
				}
				took := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if cold {
						b.StopTimer()
						if out, err := exec.Command(mp.Doveadm, "-c", mp.DovecotConfig, "auth", "cache", "flush").CombinedOutput(); err != nil {
							b.Fatalf("flush: %v %s", err, out)
						}
						b.StartTimer()
					}
					start := time.Now()
					ic, err := s.imapLogin(a, pw)
					if err != nil {
						b.Fatal(err)
					}
					took = append(took, time.Since(start))
					b.StopTimer()
					ic.close()
					b.StartTimer()
				}
				benchstat.Report(b, "login", took)
			})
		}
	}
	s.mod.BcryptCost = 10
}

// BenchmarkDelivery sends b.N messages from 100 concurrent SMTP clients to
// the MX port and waits until Dovecot has stored them all (Exim -> LMTP
// -> Dovecot), without and with spamd and clamd in the path.
func BenchmarkDelivery(b *testing.B) {
	for _, filters := range []bool{false, true} {
		b.Run(fmt.Sprintf("spamd+clamd=%v", filters), func(b *testing.B) { benchDelivery(b, filters) })
	}
}

func benchDelivery(b *testing.B, filters bool) {
	s := startStackWith(b, filters)
	acct := s.newAccount(b)
	dom := randomDomain(b)
	req := &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom}
	if filters {
		req.Spam = &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 50, Action: agentpb.MailSpamAction_MAIL_SPAM_ACTION_TAG}
	}
	s.ensureDomain(b, req)
	to := "sink@" + dom
	s.ensureMailbox(b, &agentpb.EnsureMailboxAction{Username: acct, Address: to, SealedPassword: s.seal(b, to, "Quartz-Lantern-481"), QuotaMb: 10240})
	newDir := filepath.Join(s.p.HomeBase, acct, "mail", dom, "sink", "Maildir", "new")
	msg := message("x@elsewhere.example.org", to, "load", "a small message body")
	b.ResetTimer()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for w := 0; w < 100; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := s.deliver("x@elsewhere.example.org", []string{to}, msg); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for {
		ents, _ := os.ReadDir(newDir)
		if int64(len(ents)) >= int64(b.N)-failed.Load() {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("%d of %d delivered", len(ents), b.N)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d sends failed, the first: %v", failed.Load(), firstErr.Load())
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
