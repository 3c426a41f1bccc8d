// Package packaging builds the npanel rpm and deb from the binaries and the
// files in ../packaging (nfpm.yaml, systemd units, default configuration,
// maintainer scripts), with nfpm as a library, plus the manual pages the
// binary writes about itself.
package packaging

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Options says what to package and where.
type Options struct {
	Binary      string // the npanel binary (linux/amd64)
	AgentBinary string // the npanel-agent binary (linux/amd64)
	Version     string // e.g. 0.1.0~git123.5fe3efb
	OutDir      string // dist/
	// Dir holds nfpm.yaml and the files it names (the repository's
	// packaging/ directory).
	Dir string
}

// Result names the packages written.
type Result struct {
	Deb, RPM string
}

// versionRE is what both dpkg and rpm accept as an upstream version without
// a revision: a leading digit, no "-" (dpkg would take what follows for the
// Debian revision, rpm refuses it) and no "_" or ":" (an rpm release
// separator, a dpkg epoch).
var versionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)

// DebName and RPMName are the package file names of version: the contract
// with make package, Ansible and the README.
func DebName(version string) string { return "npanel_" + version + "_amd64.deb" }

// RPMName: see DebName.
func RPMName(version string) string { return "npanel-" + version + ".x86_64.rpm" }

// Build writes OutDir/DebName(Version) and OutDir/RPMName(Version).
func Build(o Options) (Result, error) {
	if !versionRE.MatchString(o.Version) {
		return Result{}, fmt.Errorf("version %q: want a digit first, then letters, digits, '.', '+' or '~' (valid for both dpkg and rpm)", o.Version)
	}
	binary, err := executable(o.Binary)
	if err != nil {
		return Result{}, err
	}
	agentBinary, err := executable(o.AgentBinary)
	if err != nil {
		return Result{}, err
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return Result{}, err
	}
	tmp, err := os.MkdirTemp("", "npanel-package-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(tmp)
	man := filepath.Join(tmp, "man")
	if err := manPages(binary, filepath.Join(tmp, "raw"), man); err != nil {
		return Result{}, err
	}

	vars := map[string]string{"VERSION": o.Version, "BINARY": binary, "AGENT_BINARY": agentBinary, "MANDIR": man}
	// Only these: the build's environment must not leak into the package.
	config, err := nfpm.ParseFileWithEnvMapping(filepath.Join(dir, "nfpm.yaml"), func(k string) string { return vars[k] })
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", filepath.Join(dir, "nfpm.yaml"), err)
	}
	// Paths in nfpm.yaml are relative to its directory, not to wherever
	// the build runs.
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	for _, c := range config.Contents {
		c.Source = abs(c.Source)
	}
	s := &config.Scripts
	s.PreInstall, s.PostInstall, s.PreRemove, s.PostRemove = abs(s.PreInstall), abs(s.PostInstall), abs(s.PreRemove), abs(s.PostRemove)
	if err := config.Validate(); err != nil {
		return Result{}, fmt.Errorf("nfpm.yaml: %w", err)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return Result{}, err
	}
	var r Result
	for _, p := range []struct {
		format string
		name   string
		out    *string
	}{{"deb", DebName(o.Version), &r.Deb}, {"rpm", RPMName(o.Version), &r.RPM}} {
		path := filepath.Join(o.OutDir, p.name)
		if err := build(&config, p.format, path); err != nil {
			return Result{}, err
		}
		*p.out = path
	}
	return r, nil
}

// executable returns the absolute path of an executable regular file.
func executable(path string) (string, error) {
	if path == "" {
		return "", errors.New("binary: no path given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("binary %s: not an executable file (%v)", path, err)
	}
	return abs, nil
}

func build(config *nfpm.Config, format, path string) error {
	info, err := config.Get(format)
	if err != nil {
		return err
	}
	info = nfpm.WithDefaults(info)
	pkg, err := nfpm.Get(format)
	if err != nil {
		return err
	}
	// Written aside and renamed: a failed build leaves no truncated package
	// under the final name.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	info.Target = path
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", format, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// manPages runs `npanel man RAW` (hidden: cobra's doc generator over the
// binary's own commands) and gzips the pages into DIR, without name or
// time in the gzip header so that the same binary gives the same bytes.
func manPages(binary, raw, dir string) error {
	cmd := exec.Command(binary, "man", raw)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
		cmd.Env = append(cmd.Env, "SOURCE_DATE_EPOCH="+epoch)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s man: %v: %s", binary, err, out)
	}
	pages, err := filepath.Glob(filepath.Join(raw, "*.1"))
	if err != nil {
		return err
	}
	if len(pages) == 0 {
		return errors.New(binary + " man wrote no pages")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range pages {
		if err := gzipFile(p, filepath.Join(dir, filepath.Base(p)+".gz")); err != nil {
			return err
		}
	}
	return nil
}

func gzipFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	zw, err := gzip.NewWriterLevel(out, gzip.BestCompression)
	if err != nil {
		out.Close()
		return err
	}
	if _, err := io.Copy(zw, in); err != nil {
		out.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
