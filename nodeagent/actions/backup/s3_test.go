package backup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	s3test "github.com/npanel/npanel/internal/testenv/s3"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestS3BackupRestore backs an account up to a real S3 server
// (SeaweedFS) and restores a deleted file from it; credentials reach
// restic only in its environment, and a wrong secret fails without
// showing it.
func TestS3BackupRestore(t *testing.T) {
	n := newNode(t, nodeOpts{})
	srv := s3test.Start(t)
	repo := &agentpb.BackupRepository{
		Target: "s3one", Kind: agentpb.BackupTargetKind_BACKUP_TARGET_KIND_S3, Username: n.user,
		SealedPassword: seal(agentpb.BackupPasswordSealContext(n.user), n.password),
		S3Endpoint:     srv.Endpoint, S3Bucket: "npanel-backups", S3Prefix: "cluster1",
		S3AccessKeyId: srv.AccessKey, SealedS3SecretKey: seal(agentpb.BackupS3SecretSealContext("s3one"), srv.SecretKey),
	}
	want := randBytes(100 << 10)
	n.writeFile(t, "public_html/data.bin", want)
	n.writeFile(t, "mail/example.com/info/Maildir/new/1", []byte("Subject: x\n\nhi\n"))
	res := mustApply(t, n.env, n.m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "s1", Repository: repo, StateJson: []byte(`{}`)})).(*agentpb.BackupResult)
	if len(res.Failed) != 0 || len(res.SnapshotIds) != 2 {
		t.Fatalf("s3 backup: %+v", res)
	}
	if err := os.Remove(filepath.Join(n.home, "public_html/data.bin")); err != nil {
		t.Fatal(err)
	}
	rr, err := apply(t, n.env, n.m.NewRestoreBackup(&agentpb.RestoreBackupAction{RestoreId: "r1", BackupId: "s1", Repository: repo, What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, Path: "public_html/data.bin", InPlace: true}))
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(n.home, "public_html/data.bin"), want)
	if rr.(*agentpb.RestoreResult).Files != 1 {
		t.Fatalf("%+v", rr)
	}
	v := mustApply(t, n.env, n.m.NewVerifyBackup(&agentpb.VerifyBackupAction{BackupId: "s1", Repository: repo})).(*agentpb.VerifyResult)
	if !v.Ok || v.FilesChecked < 3 {
		t.Fatalf("verify: %+v", v)
	}

	// A wrong secret: refused by the server, and not echoed.
	bad := proto.Clone(repo).(*agentpb.BackupRepository)
	bad.SealedS3SecretKey = seal(agentpb.BackupS3SecretSealContext("s3one"), "wrong-secret-value")
	_, err = apply(t, n.env, n.m.NewBackupAccount(&agentpb.BackupAccountAction{BackupId: "s2", Repository: bad}))
	if err == nil {
		t.Fatal("backup with a wrong S3 secret succeeded")
	}
	if strings.Contains(err.Error(), "wrong-secret-value") || strings.Contains(err.Error(), n.password) {
		t.Fatalf("secret in error: %v", err)
	}

	f := mustApply(t, n.env, n.m.NewForgetBackup(&agentpb.ForgetBackupAction{All: true, Repository: repo})).(*agentpb.ForgetResult)
	if len(f.RemovedSnapshotIds) != 2 {
		t.Fatalf("forget all: %+v", f)
	}
}
