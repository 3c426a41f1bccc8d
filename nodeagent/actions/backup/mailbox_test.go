package backup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// TestMailboxRestore backs up a mailbox's maildir and password hash (from
// the mail module's passwd-file), then loses a message and changes the
// password; a MAILBOX restore in place brings both back. A mailbox the
// node does not have is reported, not hidden.
func TestMailboxRestore(t *testing.T) {
	n := newNode(t, nodeOpts{})
	mp := n.env.Profile.Mail()
	mhome := filepath.Join(n.home, "mail/example.com/info")
	line := func(hash string) string {
		return fmt.Sprintf("info:{BLF-CRYPT}%s:%d:%d::%s::userdb_quota_rule=*:storage=100M\n", hash, testUID, testUID, mhome)
	}
	const oldHash, newHash = "$2a$05$oldoldoldoldoldoldoldeu9nTmK1Vt4m6Sx1X0Vh3Vq4q5s6t7u8", "$2a$05$newnewnewnewnewnewnewe.9nTmK1Vt4m6Sx1X0Vh3Vq4q5s6t7u8"
	for _, d := range []string{filepath.Join(mp.UsersDir, "example.com"), filepath.Join(mp.DomainsDir, "example.com")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	pwfile := filepath.Join(mp.UsersDir, "example.com", "info")
	if err := os.WriteFile(pwfile, []byte(line(oldHash)), 0o640); err != nil {
		t.Fatal(err)
	}
	msg := []byte("Subject: keep me\n\nbody\n")
	n.writeFile(t, "mail/example.com/info/Maildir/cur/1.host:2,S", msg)

	res := n.backup(t, "b1", nil, nil)
	if !slices.Equal(res.Contents.Mailboxes, []string{"info@example.com"}) {
		t.Fatalf("contents %+v", res.Contents)
	}
	if err := os.Remove(filepath.Join(mhome, "Maildir/cur/1.host:2,S")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwfile, []byte(line(newHash)), 0o640); err != nil {
		t.Fatal(err)
	}
	rr, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_MAILBOX, Mailbox: "info@example.com", InPlace: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Failed) != 0 {
		t.Fatalf("failed %v", rr.Failed)
	}
	checkFile(t, filepath.Join(mhome, "Maildir/cur/1.host:2,S"), msg)
	b, _ := os.ReadFile(pwfile)
	if !strings.Contains(string(b), oldHash) {
		t.Fatalf("passwd-file after restore: %s", b)
	}
	// The mailbox gone from the node: its maildir comes back, its password
	// cannot, and the restore says so.
	if err := os.Remove(pwfile); err != nil {
		t.Fatal(err)
	}
	rr, err = n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_MAILBOX, Mailbox: "info@example.com", InPlace: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Failed) != 1 || !strings.Contains(rr.Failed[0].Error, "does not exist on this node") {
		t.Fatalf("failed %v", rr.Failed)
	}
}
