package atomicfile

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, "secret"), []byte("one"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(dir, "secret"), []byte("two"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "secret"))
	if err != nil || string(got) != "two" {
		t.Fatalf("content = %q, %v", got, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	if err := WriteFile(filepath.Join(dir, "public"), []byte("x"), 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "public")); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", fi.Mode().Perm())
	}
	assertNoTemps(t, dir)
}

// A failure while producing the content leaves the old file untouched and no
// temporary file behind.
func TestWriteFileAtomicFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFile(path, []byte("old"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := WriteFileFunc(path, 0o600, nil, func(w io.Writer) error {
		if _, err := w.Write([]byte("half")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Fatalf("content = %q", got)
	}
	assertNoTemps(t, dir)
}

func TestRemoveStaleTemps(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{".node.key.tmp-123", ".journal.tmp-9", "journal", "node.key"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveTemps(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != "journal" || names[1] != "node.key" {
		t.Fatalf("left %v", names)
	}
}

// crashDirEnv makes the test binary, started again by TestCrashBeforeRename,
// write the new content and die before the rename.
const crashDirEnv = "ATOMICFILE_TEST_CRASH_DIR"

func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process of TestCrashBeforeRename")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		os.Exit(2)
	}
	p, err := Create(root, "f", 0o600, nil)
	if err != nil {
		os.Exit(2)
	}
	if _, err := p.Write([]byte("new")); err != nil {
		os.Exit(2)
	}
	if err := p.Sync(); err != nil {
		os.Exit(2)
	}
	// The process dies here: no Commit, no Abort, no deferred cleanup.
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

// A writer killed between writing the new content and the rename leaves
// the old content in place; the temporary file it leaves is what
// RemoveTemps deletes.
func TestCrashBeforeRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFile(path, []byte("old"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper: %v", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper did not die by SIGKILL before the rename: %v", err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "old" {
		t.Fatalf("content after crash = %q, %v; want the old content", got, err)
	}
	temps, _ := filepath.Glob(filepath.Join(dir, TempPattern))
	if len(temps) != 1 {
		t.Fatalf("temporary files after crash = %v, want the one the writer left", temps)
	}
	if got, _ := os.ReadFile(temps[0]); string(got) != "new" {
		t.Fatalf("temporary file = %q", got)
	}
	if err := RemoveTemps(dir); err != nil {
		t.Fatal(err)
	}
	assertNoTemps(t, dir)
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Fatalf("content after cleanup = %q", got)
	}
}

// The file gets exactly the mode asked for, whatever the umask and
// whatever mode the file it replaces had; the temporary file has it before
// the content is written.
func TestModes(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, tc := range []struct {
		name       string
		before     os.FileMode // 0: no file before
		perm, want os.FileMode
	}{
		{"new secret", 0, 0o600, 0o600},
		{"new public despite umask", 0, 0o644, 0o644},
		{"group readable", 0, 0o640, 0o640},
		{"read only", 0, 0o400, 0o400},
		{"executable", 0, 0o755, 0o755},
		{"narrowed", 0o644, 0o600, 0o600},
		{"widened", 0o600, 0o644, 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "f-" + filepath.Base(t.Name())
			if tc.before != 0 {
				if err := os.WriteFile(filepath.Join(dir, name), []byte("old"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(filepath.Join(dir, name), tc.before); err != nil {
					t.Fatal(err)
				}
			}
			p, err := Create(root, name, tc.perm, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Abort()
			fi, err := root.Stat(p.TempName())
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tc.want {
				t.Errorf("temporary file mode = %v before any content, want %v", fi.Mode().Perm(), tc.want)
			}
			if _, err := p.Write([]byte("new")); err != nil {
				t.Fatal(err)
			}
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
			fi, err = os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tc.want {
				t.Errorf("mode = %v, want %v", fi.Mode().Perm(), tc.want)
			}
		})
	}
	assertNoTemps(t, dir)
}

func TestOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	const nobody = 65534
	if err := Write(root, "f", []byte("x"), 0o640, &Owner{UID: nobody, GID: nobody}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != nobody || st.Gid != nobody || fi.Mode().Perm() != 0o640 {
		t.Fatalf("owner %d:%d mode %v, want %d:%d 0640", st.Uid, st.Gid, fi.Mode().Perm(), nobody, nobody)
	}
	// Without an owner the writer's stays, also over a file someone else owned.
	if err := Write(root, "f", []byte("y"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(filepath.Join(dir, "f"))
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
		t.Fatalf("owner %d, want the writer's (0)", st.Uid)
	}
}

// Names that would leave the root, or are no file name, are refused, and a
// symbolic link in place of the target is replaced, never followed.
func TestConfined(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, name := range []string{"", ".", "..", "../x", "a/b", "/etc/passwd"} {
		if err := Write(root, name, []byte("x"), 0o600, nil); err == nil {
			t.Errorf("Write(%q) accepted", name)
		}
	}
	outside := t.TempDir()
	if err := os.Symlink(filepath.Join(outside, "target"), filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	// The rename replaces the link itself; nothing is written outside.
	if err := Write(root, "f", []byte("x"), 0o600, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "target")); err == nil {
		t.Fatal("write followed a symbolic link out of the root")
	}
	assertNoTemps(t, dir)
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if ok, _ := filepath.Match(TempPattern, e.Name()); ok {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}
