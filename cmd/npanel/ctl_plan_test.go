package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// npanel ctl plan create --allow-exec reaches the API and shows in the list.
func TestCLIPlanAllowExec(t *testing.T) {
	s := startServer(t)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=http://" + s.api}
	pw, _ := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	for _, args := range [][]string{
		{"ctl", "plan", "create", "withexec", "--allow-exec"},
		{"ctl", "plan", "create", "noexec"},
	} {
		if out, code := run(t, env, "", args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, out)
		}
	}
	out, code := run(t, env, "", "ctl", "plan", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("plan list: exit %d: %s", code, out)
	}
	var plans []struct {
		Name      string
		AllowExec bool
	}
	if err := json.Unmarshal([]byte(out), &plans); err != nil {
		t.Fatalf("plan list: %v: %s", err, out)
	}
	got := map[string]bool{}
	for _, p := range plans {
		got[p.Name] = p.AllowExec
	}
	if len(got) != 2 || !got["withexec"] || got["noexec"] {
		t.Errorf("plans %s, want withexec allowing exec and noexec not", out)
	}
}
