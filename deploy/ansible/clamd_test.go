package ansible

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/deploy/internal/rootfs"
)

// epelScanConf is the part of EPEL's /etc/clamd.d/scan.conf (clamd 1.0)
// the role changes: the sample marker and the socket settings commented out.
const epelScanConf = `##
## Example config file for the Clam AV daemon
##
Example
LogSyslog yes
#LocalSocket /run/clamd.scan/clamd.sock
#LocalSocketGroup virusgroup
#LocalSocketMode 660
FixStaleSocket yes
#TCPSocket 3310
#TCPAddr localhost
User clamscan
`

// TestClamdSocketRole applies npanel_node's clamd tasks to a Debian 12 root
// with Debian's clamav-daemon installed (its debconf-written clamd.conf and
// its socket unit), and with the AlmaLinux data to EPEL's scan.conf in the
// same root, twice each (the second run changes nothing), and reconfigures
// the Debian package as an upgrade would. Then it starts
// clamd in the root with the rendered Debian configuration and checks the
// socket it makes: 0660 in Debian-exim.
func TestClamdSocketRole(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(ansiblePlaybook); err != nil {
		t.Fatalf("%s is missing: run make deps", ansiblePlaybook)
	}
	root := rootfs.Debian(t, "clamav-daemon")
	chroot := func(argv ...string) {
		t.Helper()
		if out, err := rootfs.Chroot(root, argv...); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	// The mail group and, for the AlmaLinux data, EPEL's users.
	chroot("/usr/sbin/groupadd", "--system", "Debian-exim")
	chroot("/usr/sbin/groupadd", "--system", "exim")
	chroot("/usr/sbin/useradd", "--system", "--no-create-home", "clamscan")
	if err := os.MkdirAll(filepath.Join(root, "etc/clamd.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	scanConf := filepath.Join(root, "etc/clamd.d/scan.conf")
	if err := os.WriteFile(scanConf, []byte(epelScanConf), 0o644); err != nil {
		t.Fatal(err)
	}
	debConf := filepath.Join(root, "etc/clamav/clamd.conf")
	before, err := os.ReadFile(debConf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(before), "LocalSocketMode 666") {
		t.Fatalf("Debian's clamd.conf no longer defaults to LocalSocketMode 666: the test's premise is gone\n%s", before)
	}

	tmp := t.TempDir()
	inv := filepath.Join(tmp, "inventory.ini")
	if err := os.WriteFile(inv, []byte(fmt.Sprintf("[nodes]\nnode1 ansible_connection=community.general.chroot ansible_host=%s ansible_python_interpreter=/usr/bin/python3\n", root)), 0o600); err != nil {
		t.Fatal(err)
	}
	play := filepath.Join(tmp, "clamd.yml")
	if err := os.WriteFile(play, []byte(`---
- name: npanel_node's clamd tasks with one distribution's data
  hosts: nodes
  gather_facts: false
  vars:
    npanel_node_systemd: false
  tasks:
    - name: Load the distribution's data
      ansible.builtin.include_vars:
        file: "{{ roles_dir }}/npanel_node/vars/{{ distro }}.yml"
    - name: Run the clamd tasks
      ansible.builtin.include_role:
        name: npanel_node
        tasks_from: clamd.yml
`), 0o600); err != nil {
		t.Fatal(err)
	}
	rolesDir := filepath.Join(playbookDir(t), "roles")
	env := append(ansibleEnv(t), "ANSIBLE_ROLES_PATH="+rolesDir)
	apply := func(distro string, n int) recap {
		t.Helper()
		out, err := run(t, tmp, env, ansiblePlaybook, "-i", inv, "-e", "roles_dir="+rolesDir, "-e", "distro="+distro, play)
		if err != nil {
			t.Fatalf("%s run %d: %v\n%s", distro, n, err, tail(out, 40))
		}
		r, ok := parseRecap(out)["node1"]
		if !ok || r.failed != 0 {
			t.Fatalf("%s run %d: %+v\n%s", distro, n, r, tail(out, 40))
		}
		return r
	}
	for _, distro := range []string{"Debian", "AlmaLinux"} {
		if r := apply(distro, 1); r.changed == 0 {
			t.Errorf("%s: the first run changed nothing", distro)
		}
		if r := apply(distro, 2); r.changed != 0 {
			t.Errorf("%s: the second run changed %d things, want 0", distro, r.changed)
		}
	}

	// A package upgrade keeps the settings: clamav-daemon's postinst
	// regenerates clamd.conf from debconf answers read from the file and
	// merges it with ucf, which keeps a locally changed file.
	if err := os.WriteFile(filepath.Join(root, "usr/sbin/policy-rc.d"), []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	chroot("/usr/sbin/dpkg-reconfigure", "--frontend=noninteractive", "clamav-daemon")

	settings := func(path string) map[string][]string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return settingsOf(string(b))
	}
	for path, want := range map[string]map[string]string{
		debConf:  {"LocalSocket": "/run/clamav/clamd.ctl", "LocalSocketGroup": "Debian-exim", "LocalSocketMode": "660", "User": "clamav"},
		scanConf: {"LocalSocket": "/run/clamd.scan/clamd.sock", "LocalSocketGroup": "exim", "LocalSocketMode": "660", "User": "clamscan"},
	} {
		got := settings(path)
		for k, v := range want {
			if len(got[k]) != 1 || got[k][0] != v {
				t.Errorf("%s: %s = %q, want exactly %q", path, k, got[k], v)
			}
		}
		for _, k := range []string{"TCPSocket", "TCPAddr", "Example"} {
			if len(got[k]) != 0 {
				t.Errorf("%s still has %s %q", path, k, got[k])
			}
		}
	}
	// Debian's other settings are left as debconf wrote them.
	for k, v := range settings(debConf) {
		if strings.HasPrefix(k, "LocalSocket") {
			continue
		}
		if want := settingsOf(string(before))[k]; strings.Join(want, "|") != strings.Join(v, "|") {
			t.Errorf("clamd.conf %s changed from %q to %q", k, want, v)
		}
	}

	dropIn, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/clamav-daemon.socket.d/npanel.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\[Socket\]\nSocketGroup=Debian-exim\nSocketMode=0660$`).Match(dropIn) {
		t.Errorf("clamav-daemon.socket drop-in:\n%s", dropIn)
	}
	tmpfiles, err := os.ReadFile(filepath.Join(root, "etc/tmpfiles.d/clamd.scan.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(tmpfiles), "\nd /run/clamd.scan 0750 clamscan exim -\n") {
		t.Errorf("tmpfiles.d/clamd.scan.conf:\n%s", tmpfiles)
	}
	for user, group := range map[string]string{"clamav": "Debian-exim", "clamscan": "exim"} {
		out, err := rootfs.Chroot(root, "/usr/bin/id", "-nG", user)
		if err != nil || !strings.Contains(" "+strings.TrimSpace(string(out))+" ", " "+group+" ") {
			t.Errorf("%s's groups: %q %v, want %s among them", user, out, err, group)
		}
	}

	t.Run("DebianClamdSocket", func(t *testing.T) { clamdInRoot(t, root) })
}

// settingsOf maps each setting of a clamd.conf to its values.
func settingsOf(conf string) map[string][]string {
	m := map[string][]string{}
	for _, l := range strings.Split(conf, "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			m[f[0]] = append(m[f[0]], strings.Join(f[1:], " "))
		}
	}
	return m
}

// clamdInRoot runs the root's clamd (no systemd: clamd makes the socket
// itself) with the configuration the role wrote and a one-signature
// database, and checks the socket's mode and group.
func clamdInRoot(t *testing.T, root string) {
	db := filepath.Join(root, "var/lib/clamav")
	eicar := `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
	if err := os.WriteFile(filepath.Join(db, "npanel-test.ndb"), []byte(fmt.Sprintf("Eicar-Test-Signature:0:*:%x\n", eicar)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := rootfs.Chroot(root, "/usr/bin/install", "-d", "-o", "clamav", "-g", "clamav", "/run/clamav", "/var/log/clamav"); err != nil {
		t.Fatalf("socket directory: %v\n%s", err, out)
	}
	cmd := exec.Command("/usr/sbin/chroot", root, "/usr/sbin/clamd", "--foreground=true", "--config-file=/etc/clamav/clamd.conf")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
	})
	sock := filepath.Join(root, "run/clamav/clamd.ctl")
	var fi os.FileInfo
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		if fi, err = os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("clamd exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("clamd made no socket at %s in 60 s\n%s", sock, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	gid, err := rootfs.Chroot(root, "/usr/bin/getent", "group", "Debian-exim")
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o660 || fmt.Sprint(st.Gid) != strings.Split(string(gid), ":")[2] {
		t.Fatalf("clamd's socket is %v, gid %d; want 0660 in Debian-exim (%s)", fi.Mode().Perm(), st.Gid, strings.TrimSpace(string(gid)))
	}
}
