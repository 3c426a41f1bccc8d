package security

import (
	"context"
	"crypto/tls"
	"database/sql"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

const (
	tenantPassword = "tenant-password-4711"
	planName       = "sec"
	dbPassword     = `Db-p4ss'wo"rd;--`
)

// tenant is one account with the clients that may act on it.
type tenant struct {
	*client.Account
	// owner is the account's user login (role USER); nil for a2.
	owner *client.Client
	home  string
	// db and dbUser are a MariaDB database and user the account holds,
	// dbUser granted ALL on db, with password dbPassword.
	db, dbUser string
}

// cluster is the one fixture every vector runs against: a server with
// embedded etcd, node-a running every module (nginx + PHP-FPM 8.2,
// PowerDNS, MariaDB, PostgreSQL), two resellers and three accounts, and two
// declared nodes (node-b, node-c) whose certificates the test holds.
type cluster struct {
	s    *testenv.Server
	node *testenv.Agent
	prof *platform.Profile

	admin, resA, resB *client.Client
	// resAToken is an API token of reseller A.
	resAToken string
	// a1 and a2 belong to reseller A, b1 to reseller B.
	a1, a2, b1 *tenant

	// http and dns are node-a's nginx and PowerDNS listeners.
	http, dns string

	// nodeACert is node-a's own certificate (the running agent's);
	// nodeBCert and nodeCCert were enrolled by the test for two declared
	// nodes with no agent and no role that receives accounts.
	nodeACert, nodeBCert, nodeCCert *tls.Certificate

	// tokens are the bearer tokens of the logins above, by user name;
	// resBTokenID is the id of an API token of reseller B.
	tokens      map[string]string
	resBTokenID string
	// b1RecordID is a TXT record of b1's zone.
	b1RecordID string

	// PostgreSQL databases of a1 and b1, made on first use.
	pgOnce   sync.Once
	pgErr    error
	pgA, pgB pgTenant
}

func TestMain(m *testing.M) { testenv.MainRemovingTestUsers(m) }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if strings.EqualFold(os.Getenv("CI"), "true") {
		t.Fatal("the security suite creates Linux users and runs daemons: it needs root in CI")
	}
	t.Skip("the security suite creates Linux users and runs daemons: run it as root")
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	for _, d := range []string{"/usr/sbin/nginx", "/usr/sbin/php-fpm8.2", "/usr/sbin/pdns_server", "/usr/sbin/mariadbd"} {
		testenv.RequireDaemon(t, d)
	}
	requireRoot(t)
	start := time.Now()
	ctx := testenv.Context(t)
	s := testenv.StartServer(t)
	c := &cluster{s: s, tokens: map[string]string{}}
	c.admin = c.login(t, "admin")
	c.node = s.StartAgent(t, "node-a", testenv.WithModules(t, "web", "dns", "db"))
	c.http, c.dns = c.node.Config.HTTPListen, c.node.Config.DNSListen
	prof, err := platform.DetectProfile(c.node.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	c.prof = prof
	// A first MariaDB start initialises its data directory: minutes when
	// the other test binaries load both cores.
	testenv.WaitFor(t, 300*time.Second, "node-a's daemons running", func() bool {
		svcs, _, err := s.Admin.Services(ctx, "node-a")
		if err != nil {
			t.Fatal(err)
		}
		running := map[string]bool{}
		for _, sv := range svcs {
			running[sv.Name] = sv.State == "RUNNING"
		}
		return running["nginx"] && running["php-fpm8.2"] && running["pdns"] && running["mariadb"]
	})

	// Two nodes declared with a role that takes no accounts; the test holds
	// their certificates to speak for them on the gateway.
	c.nodeBCert = c.enrollNode(t, "node-b")
	c.nodeCCert = c.enrollNode(t, "node-c")
	c.nodeACert = testenv.AgentCert(t, c.node)

	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: planName, DiskMB: 100, BandwidthMB: 1000, Domains: 3, Mailboxes: 1, Databases: 3, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"secresa", "secresb"} {
		if _, err := s.Admin.CreateReseller(ctx, r, tenantPassword, 5, 1000, []string{planName}, ""); err != nil {
			t.Fatal(err)
		}
	}
	c.resA, c.resB = c.login(t, "secresa"), c.login(t, "secresb")
	// Reseller B's own plan, which reseller A must neither see nor use.
	if _, err := c.resB.CreatePlan(ctx, client.Plan{Name: "bplan", DiskMB: 10, BandwidthMB: 10, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if c.resAToken, _, err = c.resA.CreateAPIToken(ctx, "automation", nil); err != nil {
		t.Fatal(err)
	}
	_, bt, err := c.resB.CreateAPIToken(ctx, "automation", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.resBTokenID = bt.ID

	c.a1 = c.newTenant(t, c.resA, "secusera1")
	c.a2 = c.newTenant(t, c.resA, "")
	c.b1 = c.newTenant(t, c.resB, "secuserb1")
	for _, tn := range []*tenant{c.a1, c.a2, c.b1} {
		c.waitActive(t, tn.ID)
		tn.home = filepath.Join(prof.HomeBase, tn.Username)
	}
	for _, tn := range []*tenant{c.a1, c.b1} {
		if _, err := tn.owner.CreateDatabase(ctx, tn.ID, "app", ""); err != nil {
			t.Fatalf("database of %s: %v", tn.Username, err)
		}
		if _, err := tn.owner.CreateDatabaseUser(ctx, tn.ID, "web", dbPassword, ""); err != nil {
			t.Fatalf("database user of %s: %v", tn.Username, err)
		}
		tn.db, tn.dbUser = tn.Username+"_app", tn.Username+"_web"
		if _, err := tn.owner.SetDatabasePrivileges(ctx, tn.ID, tn.db, tn.dbUser, []string{"ALL"}); err != nil {
			t.Fatalf("grant of %s: %v", tn.Username, err)
		}
	}
	if err := c.mysql(c.b1.dbUser, dbPassword, c.b1.db,
		"CREATE TABLE secrets (v VARCHAR(64))", "INSERT INTO secrets VALUES ('b1-secret')"); err != nil {
		t.Fatalf("b1's table: %v", err)
	}
	c.writeSites(t)
	c.setupDNS(t)
	t.Logf("cluster ready in %s", time.Since(start).Round(time.Millisecond))
	return c
}

func (c *cluster) login(t *testing.T, name string) *client.Client {
	t.Helper()
	pw := tenantPassword
	if name == "admin" {
		pw = testenv.AdminPassword
	}
	cl, tok, err := client.New(c.s.URL(), "").Login(context.Background(), name, pw)
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	c.tokens[name] = tok
	return cl
}

// newTenant creates an account through reseller and, when login is not
// empty, a user login for it.
func (c *cluster) newTenant(t *testing.T, reseller *client.Client, login string) *tenant {
	t.Helper()
	ctx := context.Background()
	u := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, u)
	a, err := reseller.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: planName})
	if err != nil {
		t.Fatalf("account %s: %v", u, err)
	}
	tn := &tenant{Account: a}
	if login != "" {
		if err := reseller.CreateUser(ctx, login, tenantPassword, a.ID); err != nil {
			t.Fatal(err)
		}
		tn.owner = c.login(t, login)
	}
	return tn
}

func (c *cluster) waitActive(t *testing.T, id string) {
	t.Helper()
	testenv.WaitFor(t, 120*time.Second, "account "+id+" ACTIVE", func() bool {
		a, err := c.admin.Account(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if a != nil && a.Status == "FAILED" {
			t.Fatalf("account %s FAILED: %v", id, a.Reason)
		}
		return a != nil && a.Status == "ACTIVE"
	})
}

// enrollNode declares name (role BACKUP: no accounts, no zones) and
// enrols it with a key the test holds.
func (c *cluster) enrollNode(t *testing.T, name string) *tls.Certificate {
	t.Helper()
	ctx := context.Background()
	tok, err := c.admin.CreateJoinToken(ctx, name, "127.0.0.1", []string{"BACKUP"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := testenv.EnrollNode(ctx, c.enrollClient(t), tok.Token, name)
	if err != nil {
		t.Fatalf("enrol %s: %v", name, err)
	}
	return cert
}

// gatewayClient dials the gateway as an agent would, presenting cert (nil:
// no client certificate).
func (c *cluster) gatewayClient(t *testing.T, cert *tls.Certificate) agentpb.AgentGatewayClient {
	t.Helper()
	host, _, _ := net.SplitHostPort(c.s.Config.AgentListen)
	cfg := pki.AgentTLSConfig(host, c.s.CA().Root(), func() (*tls.Certificate, error) {
		if cert == nil {
			return &tls.Certificate{}, nil
		}
		return cert, nil
	})
	return testenv.DialGateway(t, c.s.Config.AgentListen, cfg)
}

// enrollClient dials the gateway as an agent that is not enrolled yet.
func (c *cluster) enrollClient(t *testing.T) agentpb.AgentGatewayClient {
	t.Helper()
	host, _, _ := net.SplitHostPort(c.s.Config.AgentListen)
	return testenv.DialGateway(t, c.s.Config.AgentListen, pki.EnrollClientTLSConfig(host, c.s.CA().RootFingerprint(), nil))
}

// mysql logs in to node-a's MariaDB over its socket as user and runs stmts
// in database db ("" for none), returning the first error.
func (c *cluster) mysql(user, password, db string, stmts ...string) error {
	return mariadb.QueryAs(c.prof.DB().MariaDBSocket, user, password, db, stmts...)
}

// mysqlQuery runs one query as user and returns the first column of every
// row.
func (c *cluster) mysqlQuery(user, password, db, q string) ([]string, error) {
	conn, err := sql.Open("mysql", user+":"+password+"@unix("+c.prof.DB().MariaDBSocket+")/"+db+"?timeout=5s")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v sql.NullString
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v.String)
	}
	return out, rows.Err()
}

// writeOwned writes a file owned by the account's Linux user, creating the
// parent directories (also owned by it).
func writeOwned(t *testing.T, tn *tenant, rel, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(tn.home, rel)
	uid, gid := ids(t, tn.Username)
	for dir := filepath.Dir(path); len(dir) > len(tn.home); dir = filepath.Dir(dir) {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		defer func(d string) { _ = os.Lchown(d, uid, gid) }(dir)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	return path
}

// symlinkOwned makes a symlink owned by the account's user, as the account
// could over SFTP or from its PHP.
func symlinkOwned(t *testing.T, tn *tenant, rel, target string) {
	t.Helper()
	path := filepath.Join(tn.home, rel)
	_ = os.Remove(path)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	uid, gid := ids(t, tn.Username)
	if err := os.Lchown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

func ids(t *testing.T, name string) (int, int) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}
