package platform

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestDetectThisMachine(t *testing.T) {
	f, err := Detect(t.TempDir())
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	if f.GetOs() == "" || strings.ContainsAny(f.GetOs(), "\"\n") {
		t.Errorf("os = %q", f.GetOs())
	}
	if f.GetKernel() == "" || f.GetKernel()[0] < '0' || f.GetKernel()[0] > '9' {
		t.Errorf("kernel = %q, want a release like 6.1.0", f.GetKernel())
	}
	if f.GetArch() != runtime.GOARCH {
		t.Errorf("arch = %q", f.GetArch())
	}
	if f.GetCpus() < 1 {
		t.Errorf("cpus = %d", f.GetCpus())
	}
	if m := f.GetMemoryBytes(); m < 64<<20 || m > 1<<50 {
		t.Errorf("memory = %d bytes", m)
	}
	if d := f.GetDiskBytes(); d < 1<<20 {
		t.Errorf("disk = %d bytes", d)
	}
	if !slices.IsSorted(f.GetCapabilities()) {
		t.Errorf("capabilities not sorted: %v", f.GetCapabilities())
	}
	for _, c := range f.GetCapabilities() {
		if !slices.ContainsFunc(capabilities, func(k capability) bool { return k.name == c }) {
			t.Errorf("unexpected capability %q", c)
		}
	}
	// Cross-check against the filesystem for the ones with a single path.
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil != slices.Contains(f.GetCapabilities(), "nginx") {
		t.Errorf("nginx capability disagrees with /usr/sbin/nginx")
	}
	if _, err := os.Stat("/usr/bin/rsync"); err == nil != slices.Contains(f.GetCapabilities(), "rsync") {
		t.Errorf("rsync capability disagrees with /usr/bin/rsync")
	}
	t.Logf("facts: %v", f)
}

func TestDetectMissingDataDir(t *testing.T) {
	f, err := Detect(filepath.Join(t.TempDir(), "missing"))
	if err == nil {
		t.Fatal("Detect on a missing directory: no error")
	}
	// Everything else is still reported.
	if f.GetArch() == "" || f.GetCpus() == 0 || f.GetDiskBytes() != 0 {
		t.Fatalf("partial facts = %v", f)
	}
}

func TestParseOSRelease(t *testing.T) {
	got := parseOSRelease([]byte(`# comment
NAME="AlmaLinux"
PRETTY_NAME="AlmaLinux 9.4 (Seafoam \"Ocelot\")"
ID=almalinux
VERSION_ID='9.4'
BROKEN LINE
`))
	want := map[string]string{
		"NAME":        "AlmaLinux",
		"PRETTY_NAME": `AlmaLinux 9.4 (Seafoam "Ocelot")`,
		"ID":          "almalinux",
		"VERSION_ID":  "9.4",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
}

func TestMemTotal(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "MemFree:  100 kB\nMemTotal:       16318888 kB\n")
	if got, err := memTotal(good); err != nil || got != 16318888*1024 {
		t.Fatalf("memTotal = %d, %v", got, err)
	}
	for name, s := range map[string]string{"missing": "MemFree: 1 kB\n", "unit": "MemTotal: 5 MB\n", "number": "MemTotal: x kB\n"} {
		if _, err := memTotal(write(name, s)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestCapabilityGlob(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "php-fpm8.2")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	notExec := filepath.Join(dir, "exim4")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !(capability{globs: []string{filepath.Join(dir, "php-fpm[0-9]*")}}).installed() {
		t.Error("versioned php-fpm not found")
	}
	if (capability{paths: []string{notExec}}).installed() {
		t.Error("non-executable file counted as installed")
	}
	if (capability{paths: []string{dir}}).installed() {
		t.Error("directory counted as installed")
	}
}
