package controlplane_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// A PostgreSQL database, its user (with its SCRAM hash, sealed to the
// node) and its grant in the report are made through the API with engine
// POSTGRESQL, and the node is asked to fill the database.
func TestCpanelImportPostgres(t *testing.T) {
	e := newCpanelEnv(t)
	ctx := context.Background()
	if err := e.st.PutServices(ctx, store.NodeServices{Node: "web-1", ReportedAt: time.Now(), Services: []store.ServiceStatus{
		{Name: "mariadb", State: "running"}, {Name: "postgresql", State: "running"}}}); err != nil {
		t.Fatal(err)
	}
	const scram = "SCRAM-SHA-256$4096:Y3BhbmVsdGVzdC1zYWx0IQ==$6Q3V0kBBMb5kqr/4M0yFnqA4ESBOU8R2Dq/gUr8Fkbw=:l2E9a8m9OLjjB2zTYBKQ9zN0bxzVYLdzWxhO3F3YZcU="
	rep := e.node.report
	pg := agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL
	rep.Databases = append(rep.Databases, &agentpb.CpanelDatabase{Name: "cpjoe_shop", Engine: pg, Bytes: 8192})
	rep.DatabaseUsers = append(rep.DatabaseUsers, &agentpb.CpanelDatabaseUser{Name: "cpjoe_shopper", Engine: pg,
		SealedPasswordHash: e.node.seal(t, scram, agentpb.DatabasePasswordHashSealContext("cpjoe_shopper")),
		Grants:             []*agentpb.CpanelGrant{{Database: "cpjoe_shop", Privileges: []string{"ALL"}}}})
	rep.Items = append(rep.Items,
		&agentpb.CpanelItem{Kind: "database", Name: "cpjoe_shop", Disposition: agentpb.ImportDisposition_IMPORT_DISPOSITION_IMPORT},
		&agentpb.CpanelItem{Kind: "database_user", Name: "cpjoe_shopper", Disposition: agentpb.ImportDisposition_IMPORT_DISPOSITION_IMPORT})
	im, err := e.s.Admin.ImportCpanelBackup(ctx, client.ImportCpanelInput{Node: "web-1", Path: "cpmove-cpjoe.tar.gz", Owner: "admin", Plan: "web"})
	if err != nil {
		t.Fatal(err)
	}
	got := e.waitImport(t, im.ID, "finished", finished)
	if got.Status != store.ImportDone {
		for _, it := range got.Items {
			t.Logf("%+v", it)
		}
		t.Fatalf("import %s: %s", got.Status, got.Error)
	}
	dbs, err := e.st.GetDatabases(ctx, got.Account)
	if err != nil {
		t.Fatal(err)
	}
	if d := dbs.Databases["cpjoe_shop"]; d == nil || d.Engine != "postgresql" {
		t.Errorf("database cpjoe_shop: %+v", d)
	}
	if d := dbs.Databases["cpjoe_wp"]; d == nil || d.Engine != "mariadb" {
		t.Errorf("database cpjoe_wp: %+v", d)
	}
	u := dbs.Users["cpjoe_shopper"]
	if u == nil || u.Engine != "postgresql" || !bytes.Equal(u.SealedPasswordHash, rep.DatabaseUsers[1].SealedPasswordHash) || u.SealedPassword != nil ||
		!slices.ContainsFunc(u.Grants, func(g store.DatabaseGrant) bool {
			return g.Database == "cpjoe_shop" && slices.Contains(g.Privileges, "CONNECT")
		}) {
		t.Errorf("database user cpjoe_shopper: %+v", u)
	}
	e.node.mu.Lock()
	fills := slices.Clone(e.node.imports)
	e.node.mu.Unlock()
	if len(fills) != 1 || fills[0].GetDatabases()["cpjoe_shop"] != "cpjoe_shop" || fills[0].GetDatabases()["cpjoe_wp"] != "cpjoe_wp" {
		t.Errorf("fill: %v", fills)
	}
	for _, k := range [][2]string{{"database", "cpjoe_shop"}, {"database_user", "cpjoe_shopper"}, {"grant", "cpjoe_shopper@cpjoe_shop"}} {
		if it := itemOf(got.Items, k[0], k[1]); it == nil || it.Disposition != "IMPORT" {
			t.Errorf("item %s %s: %+v", k[0], k[1], it)
		}
	}
}
