package graph_test

import (
	"context"
	"strings"
	"testing"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
)

// TestCpanelImportRBAC: analyzing and importing read a node's disk, so
// every cPanel call is the admins' alone (FORBIDDEN to resellers and
// users, UNAUTHENTICATED anonymously), refused calls write no import,
// and an account no import created shows a null importReport to whoever
// may see it.
func TestCpanelImportRBAC(t *testing.T) {
	tn := setupCertTenants(t, pauseBackups)
	ctx := context.Background()
	anon := client.New(tn.s.URL(), "")
	who := []struct {
		name string
		c    *client.Client
	}{{"admin", tn.admin}, {"resa", tn.resA}, {"alphauser", tn.userA}, {"anonymous", anon}}
	adminOnly := map[string]string{"admin": "", "resa": "FORBIDDEN", "alphauser": "FORBIDDEN", "anonymous": "UNAUTHENTICATED"}

	im, err := tn.admin.ImportCpanelBackup(ctx, client.ImportCpanelInput{Node: "n-eu", Path: "cpmove-first.tar.gz", Owner: "resa", Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	if im.Status != "PENDING" && im.Status != "ANALYZING" {
		t.Fatalf("new import: %+v", im)
	}
	ops := []struct {
		name  string
		codes map[string]string
		call  func(c *client.Client) error
	}{
		// The admin's analysis of a bad path is refused before any
		// task (the fake node would never answer a good one).
		{"analyzeCpanelBackup", map[string]string{"admin": "INVALID_INPUT", "resa": "FORBIDDEN", "alphauser": "FORBIDDEN", "anonymous": "UNAUTHENTICATED"},
			func(c *client.Client) error {
				path := "cpmove-x.tar.gz"
				if c == tn.admin {
					path = "../cpmove-x.tar.gz"
				}
				_, err := c.AnalyzeCpanelBackup(ctx, "n-eu", path)
				return err
			}},
		{"importCpanelBackup", adminOnly, func(c *client.Client) error {
			_, err := c.ImportCpanelBackup(ctx, client.ImportCpanelInput{Node: "n-eu", Path: "cpmove-second.tar.gz", Owner: "resa", Plan: "basic"})
			return err
		}},
		{"cpanelImport", adminOnly, func(c *client.Client) error {
			got, err := c.CpanelImport(ctx, im.ID)
			if err == nil && (got == nil || got.ID != im.ID) {
				t.Errorf("cpanelImport: %+v", got)
			}
			return err
		}},
		{"cpanelImports", adminOnly, func(c *client.Client) error {
			_, _, err := c.CpanelImports(ctx, 10, "")
			return err
		}},
		{"importReport", map[string]string{"admin": "", "resa": "", "alphauser": "", "anonymous": "UNAUTHENTICATED"}, func(c *client.Client) error {
			got, err := c.AccountImport(ctx, tn.a1.ID)
			if got != nil {
				t.Errorf("importReport of an account no import created: %+v", got)
			}
			return err
		}},
	}
	for _, o := range ops {
		for _, w := range who {
			want(t, o.name+" as "+w.name, o.call(w.c), o.codes[w.name])
		}
	}

	// An account an import created: its owner and reseller see the
	// report without the operator's side of it.
	if _, err := tn.s.Store().UpdateImport(ctx, im.ID, func(r *store.Import) ([]*store.ObjectTask, error) {
		r.Account = tn.a1.ID
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	for _, w := range who[:3] {
		got, err := w.c.AccountImport(ctx, tn.a1.ID)
		if err != nil || got == nil || got.ID != im.ID {
			t.Fatalf("importReport as %s: %+v %v", w.name, got, err)
		}
		if hidden := got.Node == "" && got.Path == "" && got.CreatedBy == ""; hidden != (w.name != "admin") {
			t.Errorf("importReport as %s: node %q path %q createdBy %q", w.name, got.Node, got.Path, got.CreatedBy)
		}
	}
	list, _, err := tn.admin.CpanelImports(ctx, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 { // the first and the admin's second
		t.Errorf("%d imports, want 2: the refused calls wrote some", len(list))
	}
}

// TestCpanelImportValidation: bad input is INVALID_INPUT naming the
// field, a taken username CONFLICT, and nothing is written.
func TestCpanelImportValidation(t *testing.T) {
	tn := setupCertTenants(t, pauseBackups)
	ctx := context.Background()
	good := client.ImportCpanelInput{Node: "n-eu", Path: "cpmove-x.tar.gz", Owner: "resa", Plan: "basic"}
	for _, c := range []struct {
		name   string
		edit   func(in *client.ImportCpanelInput)
		code   string
		reason string
	}{
		{"empty path", func(in *client.ImportCpanelInput) { in.Path = "" }, "INVALID_INPUT", "path"},
		{"absolute", func(in *client.ImportCpanelInput) { in.Path = "/var/lib/x.tar.gz" }, "INVALID_INPUT", "relative"},
		{"dotdot", func(in *client.ImportCpanelInput) { in.Path = "a/../../x.tar.gz" }, "INVALID_INPUT", "clean"},
		{"dot", func(in *client.ImportCpanelInput) { in.Path = "./x.tar.gz" }, "INVALID_INPUT", "clean"},
		{"double slash", func(in *client.ImportCpanelInput) { in.Path = "a//x.tar.gz" }, "INVALID_INPUT", "clean"},
		{"not an archive", func(in *client.ImportCpanelInput) { in.Path = "x.zip" }, "INVALID_INPUT", ".tar.gz"},
		{"control char", func(in *client.ImportCpanelInput) { in.Path = "a\nb.tar.gz" }, "INVALID_INPUT", "control"},
		{"long", func(in *client.ImportCpanelInput) { in.Path = strings.Repeat("a", 300) + ".tgz" }, "INVALID_INPUT", "at most"},
		{"no node", func(in *client.ImportCpanelInput) { in.Node = "n-mars" }, "INVALID_INPUT", "no node"},
		{"no owner", func(in *client.ImportCpanelInput) { in.Owner = "nobody" }, "INVALID_INPUT", "no user"},
		{"user owner", func(in *client.ImportCpanelInput) { in.Owner = "alphauser" }, "INVALID_INPUT", "admin or a reseller"},
		{"no plan", func(in *client.ImportCpanelInput) { in.Plan = "gold" }, "INVALID_INPUT", "no plan"},
		{"bad username", func(in *client.ImportCpanelInput) { u := "Bad Name"; in.Username = &u }, "INVALID_INPUT", ""},
		{"taken username", func(in *client.ImportCpanelInput) { u := "alpha1"; in.Username = &u }, "CONFLICT", "taken"},
	} {
		in := good
		c.edit(&in)
		_, err := tn.admin.ImportCpanelBackup(ctx, in)
		want(t, c.name, err, c.code)
		if err != nil && !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: %v, want it to say %q", c.name, err, c.reason)
		}
		if c.edit != nil && in.Path != good.Path {
			_, err := tn.admin.AnalyzeCpanelBackup(ctx, in.Node, in.Path)
			want(t, "analyze "+c.name, err, c.code)
		}
	}
	if list, _, err := tn.admin.CpanelImports(ctx, 10, ""); err != nil || len(list) != 0 {
		t.Errorf("refused imports wrote %d records (%v)", len(list), err)
	}
}
