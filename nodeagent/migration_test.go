package nodeagent

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/backupnode"
	"github.com/npanel/npanel/nodeagent/actions/migrate"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
)

// An agent with --migration-listen runs the endpoint and reports it with
// its services.
func TestMigrationEndpointRuns(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, err := ca.NewJoinToken("node-m", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: t.TempDir(), Logger: log,
		MigrationListen: "127.0.0.1:0"})
	a.waitReady(t)
	st, ok := a.allow.Migrate().Status()
	if !ok || st.Name != migrate.ServiceName || st.State != services.Running || len(st.Listen) != 1 {
		t.Fatalf("endpoint status %+v", st)
	}
	c, err := net.DialTimeout("tcp", st.Listen[0], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 22)
	if _, err := c.Read(b); err != nil || !bytes.HasPrefix(b, []byte("SSH-2.0-npanel-migrate")) {
		t.Fatalf("banner %q, %v", b, err)
	}
}

// The endpoint and the backup sshd on one port: refused, naming both
// flags. Their defaults differ, so a backup node starts with them.
func TestMigrationListenConflict(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		migration, sftp string
		backup          bool
		conflict        bool
	}{
		{":2222", "", true, true},
		{"127.0.0.1:2222", ":2222", true, true},
		{"0.0.0.0:2222", "127.0.0.1:2222", true, true},
		{":2223", "", true, false},
		{"127.0.0.1:2222", "127.0.0.2:2222", true, false},
		{":2222", "", false, false},
		{platform.DefaultMigrationListen, "", true, false},
	} {
		cfg := Config{Servers: []string{"gw:1"}, DataDir: dir, JoinToken: "garbage", MigrationListen: tt.migration, SFTPListen: tt.sftp}
		if tt.backup {
			cfg.Modules = []actions.Module{backupnode.NewModule()}
		}
		_, err := New(cfg)
		got := err != nil && strings.Contains(err.Error(), "--migration-listen") && strings.Contains(err.Error(), "--sftp-listen")
		if got != tt.conflict {
			t.Errorf("%+v: %v", tt, err)
		}
	}
}
