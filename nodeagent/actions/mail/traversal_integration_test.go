package mail_test

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/npanel/npanel/protos/agentpb"
)

// TestLoginPathTraversal: Dovecot finds a login's passwd-file from the
// login name (its domain and local part are path components). A login
// whose parts are "." or ".." must not reach a file outside the domain's
// own directory, even one that holds a valid user line and password.
func TestLoginPathTraversal(t *testing.T) {
	s := startStackWith(t, false)
	acct := s.newAccount(t)
	dom := randomDomain(t)
	alice := "alice@" + dom
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: alice, SealedPassword: s.seal(t, alice, pwAlice), QuotaMb: 50})

	// Planted files a traversal would reach, each a valid passwd-file
	// for the user it is named after, with a password the test knows.
	mp := s.p.Mail()
	u, err := user.Lookup(acct)
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(s.p.HomeBase, acct)
	h, err := bcrypt.GenerateFromPassword([]byte(pwBob), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	plant := func(path, name string) {
		line := fmt.Sprintf("%s:{BLF-CRYPT}%s:%s:%s::%s::\n", name, h, u.Uid, u.Gid, home)
		if err := os.WriteFile(path, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(path) })
	}
	plant(filepath.Join(filepath.Dir(mp.UsersDir), "evil"), "evil") // UsersDir/../evil
	plant(filepath.Join(mp.UsersDir, "evil2"), "evil2")             // UsersDir/./evil2
	plant(filepath.Join(mp.UsersDir, dom+".evil3"), dom+".evil3")   // a name beside the domain's dir

	// Each failed login costs Dovecot's failure delay: try them at once,
	// each from its own address so the per-address penalty stays low.
	logins := []string{
		"evil@..", "evil2@.", "evil2", "evil2@", "@", "", "evil2@no-domain.invalid",
		"EVIL@..", "..@..", ".@.", "..@" + dom, ".@" + dom, "@" + dom,
		"alice@" + dom + "/..", "alice@../" + dom, "../evil@x", "evil@...", "evil@..\x00",
		"alice@" + dom + "\r\na2 LOGIN x y", "alice@" + strings.ToUpper(dom) + "/../..",
		dom + ".evil3@.", dom + ".evil3",
	}
	var wg sync.WaitGroup
	errs := make(chan string, 2*len(logins))
	for i, login := range logins {
		for j, pw := range []string{pwBob, pwAlice} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				from := &net.TCPAddr{IP: net.IPv4(127, 0, byte(2+j), byte(1+i))}
				if ic, err := s.imapLoginFrom(from, login, pw); err == nil {
					ic.close()
					errs <- fmt.Sprintf("login %q with a known password succeeded", login)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// The domain's own mailbox still logs in.
	for _, login := range []string{alice} {
		ic, err := s.imapLogin(login, pwAlice)
		if err != nil {
			t.Fatalf("login %s: %v", login, err)
		}
		ic.close()
	}
}
