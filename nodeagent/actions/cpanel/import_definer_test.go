package cpanel_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/protos/agentpb"
)

// A cPanel dump's view, procedure and trigger with DEFINER its database
// user import under the scoped loader and work for that user's new name;
// root's view is given to that user, reported ADAPT, and runs as it.
func TestImportDatabaseDefiners(t *testing.T) {
	f, _ := mariaFixture(t)
	o := cpaneltest.Default(cpaneltest.LayoutBackup)
	o.Databases[0].Definers = true
	p := cpaneltest.Build(t, f.p.Cpanel().ImportDir, o)
	target, user := f.user+"_wp", f.user+"_wpuser"
	const pw = "Wp-user-pass-1"
	root := rootDB(t, f.p.DB().MariaDBSocket, "mysql")
	for _, q := range []string{
		"CREATE USER '" + user + "'@'localhost' IDENTIFIED BY '" + pw + "'",
		"GRANT ALL PRIVILEGES ON `" + strings.ReplaceAll(target, "_", `\_`) + "`.* TO '" + user + "'@'localhost'",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	res, err := f.importArchive(t, &agentpb.ImportCpanelBackupAction{Path: filepath.Base(p), Username: f.user, Databases: map[string]string{"cpuser_wp": target}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failed) > 0 {
		t.Fatalf("failed: %v", res.Failed)
	}
	adapted := 0
	for _, it := range res.Items {
		t.Logf("%s %s %v %s", it.Kind, it.Name, it.Disposition, it.Note)
		if it.Kind == "database_object" {
			adapted++
			if it.Name != "cpuser_wp: view root_v" || it.Disposition != agentpb.ImportDisposition_IMPORT_DISPOSITION_ADAPT || !strings.Contains(it.Note, "definer root") {
				t.Errorf("item %v", it)
			}
		}
	}
	if adapted != 1 {
		t.Errorf("%d objects reported adapted", adapted)
	}
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd, c.DBName = "unix", f.p.DB().MariaDBSocket, user, pw, target
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	udb := sql.OpenDB(conn)
	defer udb.Close()
	if _, err := udb.Exec("CALL add_item(100)"); err != nil {
		t.Fatalf("CALL add_item as %s: %v", user, err)
	}
	var n int
	if err := udb.QueryRow("SELECT COUNT(*) FROM items_v WHERE id = 100").Scan(&n); err != nil || n != 1 {
		t.Errorf("items_v: %d %v", n, err)
	}
	if err := udb.QueryRow("SELECT COUNT(*) FROM audit WHERE id = 100").Scan(&n); err != nil || n != 1 {
		t.Errorf("trigger: %d %v", n, err)
	}
	var who string
	if err := udb.QueryRow("SELECT u FROM root_v").Scan(&who); err != nil || !strings.HasPrefix(who, user+"@") {
		t.Errorf("root_v runs as %q %v", who, err)
	}
	if err := root.QueryRow("SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? AND DEFINER NOT LIKE ?", target, user+"@%").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d views of another definer, %v", n, err)
	}
}
