package mariadb

import "testing"

func TestStart(t *testing.T) {
	s := Start(t)
	db := s.MustRoot(t)
	var v string
	if err := db.QueryRow("SELECT VERSION()").Scan(&v); err != nil {
		t.Fatal(err)
	}
	t.Logf("version %s pid %d", v, s.PID)
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME=?", "test").Scan(&n); err != nil || n != 0 {
		t.Fatalf("test db: %d %v", n, err)
	}
}
