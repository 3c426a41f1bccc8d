package graph_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

var testFP = "SHA256:" + strings.Repeat("A", 43)

func sptr(s string) *string { return &s }

// TestCpanelFetchRBAC: scanning and fetching reach out from a node with
// credentials, so they are the admins' alone; refused calls write no
// fetch and no task.
func TestCpanelFetchRBAC(t *testing.T) {
	tn := setupCertTenants(t, pauseBackups)
	ctx := context.Background()
	anon := client.New(tn.s.URL(), "")
	who := []struct {
		name string
		c    *client.Client
	}{{"admin", tn.admin}, {"resa", tn.resA}, {"resb", tn.resB}, {"alphauser", tn.userA}, {"bravouser", tn.userB}, {"anonymous", anon}}
	adminOnly := map[string]string{"admin": "", "resa": "FORBIDDEN", "resb": "FORBIDDEN", "alphauser": "FORBIDDEN", "bravouser": "FORBIDDEN", "anonymous": "UNAUTHENTICATED"}
	srv := client.CpanelServerInput{Node: "n-eu", Host: "old.example.com", User: "root", Password: sptr("hunter2-secret"), HostKeyFingerprint: &testFP}
	f, err := tn.admin.FetchCpanelBackup(ctx, srv, "", "/home/cpmove-bob.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	scanCodes := map[string]string{}
	for k, v := range adminOnly {
		scanCodes[k] = v
	}
	// The admin's scan of a bad host is refused before any task (the
	// fake node never answers a good one).
	scanCodes["admin"] = "INVALID_INPUT"
	ops := []struct {
		name  string
		codes map[string]string
		call  func(c *client.Client) error
	}{
		{"scanCpanelServer", scanCodes, func(c *client.Client) error {
			in := srv
			if c == tn.admin {
				in.Host = "old example.com"
			}
			_, err := c.ScanCpanelServer(ctx, in)
			return err
		}},
		{"fetchCpanelBackup", adminOnly, func(c *client.Client) error {
			_, err := c.FetchCpanelBackup(ctx, srv, "bob", "")
			return err
		}},
		{"cpanelFetch", adminOnly, func(c *client.Client) error {
			got, err := c.CpanelFetch(ctx, f.ID)
			if err == nil && (got == nil || got.ID != f.ID) {
				t.Errorf("cpanelFetch: %+v", got)
			}
			return err
		}},
		{"cpanelFetches", adminOnly, func(c *client.Client) error {
			_, _, err := c.CpanelFetches(ctx, 10, "")
			return err
		}},
	}
	for _, o := range ops {
		for _, w := range who {
			want(t, o.name+" as "+w.name, o.call(w.c), o.codes[w.name])
		}
	}
	list, _, err := tn.admin.CpanelFetches(ctx, 10, "")
	if err != nil || len(list) != 2 { // the first and the admin's pkgacct fetch
		t.Fatalf("%d fetches (%v), want 2: refused calls wrote some", len(list), err)
	}
}

// TestCpanelFetchSealsAndFinishes: the credentials are in the node's task
// only, sealed to the node (nothing in the clear in the record, the task
// or the answer); the controller records the node's result and forgets
// the task, the sealed secret with it.
func TestCpanelFetchSealsAndFinishes(t *testing.T) {
	tn := setupCertTenants(t, pauseBackups)
	ctx := context.Background()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	blk, _ := ssh.MarshalPrivateKey(priv, "")
	keyPEM := string(pem.EncodeToMemory(blk))
	port := 2022
	srv := client.CpanelServerInput{Node: "n-eu", Host: "Old.Example.com", Port: &port, User: "root", PrivateKey: &keyPEM, HostKeyFingerprint: &testFP}
	f, err := tn.admin.FetchCpanelBackup(ctx, srv, "bob", "")
	if err != nil {
		t.Fatal(err)
	}
	if f.Host != "old.example.com" || f.Path != "fetched/"+strings.ToLower(f.ID)+"/cpmove-bob.tar.gz" || f.HostKeyFingerprint != testFP {
		t.Fatalf("fetch %+v", f)
	}
	// pkgacct writes one archive per account: a second fetch of bob from
	// the same server by the same node waits for the first to end.
	_, err = tn.admin.FetchCpanelBackup(ctx, srv, "bob", "")
	want(t, "a second fetch of the same account", err, "CONFLICT")
	rec, err := tn.s.Store().GetFetch(ctx, f.ID)
	if err != nil {
		t.Fatal(err)
	}
	task, _, err := tn.s.Store().GetTask(ctx, rec.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(task.Spec, []byte("PRIVATE KEY")) || bytes.Contains(task.Spec, priv.Seed()) {
		t.Fatal("the task holds the private key in the clear")
	}
	var spec agentpb.Task
	if err := proto.Unmarshal(task.Spec, &spec); err != nil {
		t.Fatal(err)
	}
	got := spec.GetFetchCpanelBackup()
	plain, err := pki.Unseal(tn.nodeKeys["n-eu"], got.GetServer().GetSealedPrivateKey(), agentpb.CpanelServerKeySealContext("root", "old.example.com"))
	if err != nil || string(plain) != keyPEM {
		t.Fatalf("sealed key does not open for the node: %v", err)
	}
	if got.GetAccount() != "bob" || got.GetPath() != f.Path || got.GetServer().GetPort() != 2022 {
		t.Fatalf("task %v", got)
	}
	// The node answers.
	res := &agentpb.TaskResult{TaskId: task.ID, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED,
		Result: &agentpb.TaskResult_FetchCpanelBackup{FetchCpanelBackup: &agentpb.FetchCpanelBackupResult{
			Path: f.Path, Bytes: 1234, Sha256: strings.Repeat("ab", 32), RemotePath: "/home/cpmove-bob.tar.gz"}}}
	if _, err := tn.s.Store().CompleteTask(ctx, "n-eu", res, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := tn.admin.CpanelFetch(ctx, f.ID)
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := tn.s.Store().GetFetch(ctx, f.ID)
		if cur.Status == "DONE" && rec.TaskID == "" {
			if cur.Bytes != 1234 || cur.RemotePath == nil || *cur.RemotePath != "/home/cpmove-bob.tar.gz" || cur.FinishedAt == nil {
				t.Fatalf("done fetch %+v", cur)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetch did not finish: %+v, task %q", cur, rec.TaskID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, _, err := tn.s.Store().GetTask(ctx, task.ID); err == nil {
		t.Fatal("the finished fetch's task (with its sealed key) is still stored")
	}
	// Once it has ended, bob can be fetched again.
	if _, err := tn.admin.FetchCpanelBackup(ctx, srv, "bob", ""); err != nil {
		t.Fatalf("a fetch of bob after the first ended: %v", err)
	}
	events, _, _, err := tn.s.Store().ListAudit(ctx, store.AuditFilter{}, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var sawCreate, sawFinish bool
	for _, ev := range events {
		if strings.Contains(ev.Target+ev.Result+strings.Join(mapValues(ev.Detail), " "), "PRIVATE KEY") {
			t.Fatalf("audit event holds the key: %+v", ev)
		}
		sawCreate = sawCreate || ev.Action == "fetchCpanelBackup" && ev.Result == "ok"
		sawFinish = sawFinish || ev.Action == "cpanelFetch.finish"
	}
	if !sawCreate || !sawFinish {
		t.Errorf("audit: create %v finish %v", sawCreate, sawFinish)
	}
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestCpanelFetchValidation: bad input is INVALID_INPUT naming the field,
// audited, and nothing is written.
func TestCpanelFetchValidation(t *testing.T) {
	tn := setupCertTenants(t, pauseBackups)
	ctx := context.Background()
	good := client.CpanelServerInput{Node: "n-eu", Host: "old.example.com", User: "root", Password: sptr("pw-secret-1"), HostKeyFingerprint: &testFP}
	for _, c := range []struct {
		name            string
		edit            func(in *client.CpanelServerInput)
		account, remote string
		reason          string
	}{
		{"host with spaces", func(in *client.CpanelServerInput) { in.Host = "old example.com" }, "", "/home/x.tar.gz", "host"},
		{"user ../x", func(in *client.CpanelServerInput) { in.User = "../x" }, "", "/home/x.tar.gz", "user"},
		{"relative remote", nil, "", "home/x.tar.gz", "absolute"},
		{"remote ..", nil, "", "/home/../etc/x.tar.gz", "clean"},
		{"remote not an archive", nil, "", "/etc/shadow", "archive"},
		{"both", nil, "bob", "/home/x.tar.gz", "exactly one"},
		{"neither", nil, "", "", "exactly one"},
		{"account shell", nil, "bob;id", "", "account"},
		{"no fingerprint", func(in *client.CpanelServerInput) { in.HostKeyFingerprint = sptr("") }, "bob", "", "hostKeyFingerprint"},
		{"md5 fingerprint", func(in *client.CpanelServerInput) { in.HostKeyFingerprint = sptr("MD5:aa") }, "bob", "", "hostKeyFingerprint"},
		{"no credential", func(in *client.CpanelServerInput) { in.Password = nil }, "bob", "", "password"},
		{"bad key", func(in *client.CpanelServerInput) { in.Password, in.PrivateKey = nil, sptr("-----BEGIN garbage") }, "bob", "", "privateKey"},
		{"port", func(in *client.CpanelServerInput) { p := 70000; in.Port = &p }, "bob", "", "port"},
		{"no node", func(in *client.CpanelServerInput) { in.Node = "n-mars" }, "bob", "", "no node"},
	} {
		in := good
		if c.edit != nil {
			c.edit(&in)
		}
		_, err := tn.admin.FetchCpanelBackup(ctx, in, c.account, c.remote)
		want(t, c.name, err, "INVALID_INPUT")
		if err != nil && !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: %v, want it to say %q", c.name, err, c.reason)
		}
		if err != nil && strings.Contains(err.Error(), "pw-secret-1") {
			t.Errorf("%s: the error shows the password", c.name)
		}
	}
	if list, _, err := tn.admin.CpanelFetches(ctx, 10, ""); err != nil || len(list) != 0 {
		t.Errorf("refused fetches wrote %d records (%v)", len(list), err)
	}
	events, _, _, err := tn.s.Store().ListAudit(ctx, store.AuditFilter{}, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, ev := range events {
		if ev.Action == "fetchCpanelBackup" && ev.Result == "INVALID_INPUT" {
			refused++
		}
	}
	if refused == 0 {
		t.Error("refused fetches are not audited")
	}
}
