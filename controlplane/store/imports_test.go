package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestImports: an import is created once, updated with its tracked task
// written in the same transaction, found from the account it created,
// and listed in pages.
func TestImports(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	if err := s.CreateNode(ctx, store.Node{Name: "n1"}, store.NewAuditEvent("test", "", "createNode", "n1", "ok")); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 3 {
		im := &store.Import{ID: store.NewImportID(time.Now().Add(time.Duration(i) * time.Millisecond)), Node: "n1", Path: "a.tgz", Owner: "admin", Plan: "p", CreatedBy: "admin"}
		if err := s.CreateImport(ctx, im, store.NewAuditEvent("admin", "", "importCpanelBackup", "n1:a.tgz", "ok")); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateImport(ctx, im, store.AuditEvent{}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("second create: %v", err)
		}
		ids = append(ids, im.ID)
	}
	im, err := s.UpdateImport(ctx, ids[0], func(im *store.Import) ([]*store.ObjectTask, error) {
		im.Status, im.Account = store.ImportAnalyzing, "ACCT1"
		spec := &agentpb.Task{Action: &agentpb.Task_AnalyzeCpanelBackup{AnalyzeCpanelBackup: &agentpb.AnalyzeCpanelBackupAction{Path: im.Path}}}
		return []*store.ObjectTask{{Node: "n1", Spec: spec, CreatedBy: "controller", Track: true}}, nil
	}, store.AuditEvent{})
	if err != nil || im.TaskID == "" {
		t.Fatalf("update: %+v %v", im, err)
	}
	task, _, err := s.GetTask(ctx, im.TaskID)
	if err != nil || task.Object != store.ImportObject(ids[0]) {
		t.Fatalf("tracked task: %+v %v", task, err)
	}
	if got, err := s.ImportOfAccount(ctx, "ACCT1"); err != nil || got.ID != ids[0] {
		t.Fatalf("import of ACCT1: %+v %v", got, err)
	}
	if _, err := s.ImportOfAccount(ctx, "ACCT2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("import of ACCT2: %v", err)
	}
	for _, bad := range []string{"", "../x", "a/b", "lower"} {
		if _, err := s.GetImport(ctx, bad); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetImport(%q): %v", bad, err)
		}
	}
	page, more, err := s.ListImports(ctx, "", 2)
	if err != nil || len(page) != 2 || !more || page[0].ID != ids[0] {
		t.Fatalf("first page: %d %v %v", len(page), more, err)
	}
	page, more, err = s.ListImports(ctx, page[1].ID, 2)
	if err != nil || len(page) != 1 || more || page[0].ID != ids[2] {
		t.Fatalf("second page: %d %v %v", len(page), more, err)
	}
}
