// Package platform describes the host the agent runs on: the facts it
// reports in its Hello, and the distro profiles that say where each service
// keeps its binaries and configuration.
package platform

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/npanel/npanel/protos/agentpb"
)

// capability is a service the scheduler may place work for, found by fixed
// absolute paths. $PATH is deliberately not consulted: the agent runs as root
// and a PATH entry is exactly the kind of input it must not trust.
type capability struct {
	name  string
	paths []string // exact paths
	globs []string // filepath.Match patterns, for versioned binary names
}

var capabilities = []capability{
	{name: "dovecot", paths: []string{"/usr/sbin/dovecot"}},
	{name: "exim", paths: []string{"/usr/sbin/exim", "/usr/sbin/exim4"}},
	{name: "mariadbd", paths: []string{"/usr/sbin/mariadbd"}},
	{name: "nginx", paths: []string{"/usr/sbin/nginx"}},
	{name: "pdns_server", paths: []string{"/usr/sbin/pdns_server"}},
	// AlmaLinux ships /usr/sbin/php-fpm, Debian /usr/sbin/php-fpm8.2.
	{name: "php-fpm", paths: []string{"/usr/sbin/php-fpm"}, globs: []string{"/usr/sbin/php-fpm[0-9]*"}},
	{name: "rsync", paths: []string{"/usr/bin/rsync"}},
}

// Paths of the files Detect reads; variables so tests can point at fixtures.
var (
	osReleasePaths = []string{"/etc/os-release", "/usr/lib/os-release"}
	meminfoPath    = "/proc/meminfo"
)

// Detect reports the facts of this host. dataDir is the agent's data
// directory: its filesystem is the one whose size is reported.
//
// Detection is best effort: every fact that could be read is filled in, and
// the error (if any) joins what could not. A caller may still send the facts
// it got.
func Detect(dataDir string) (*agentpb.NodeFacts, error) {
	f := &agentpb.NodeFacts{
		Arch: runtime.GOARCH,
		Cpus: uint32(runtime.NumCPU()),
	}
	var errs []error

	if osName, err := prettyName(); err != nil {
		errs = append(errs, err)
	} else {
		f.Os = osName
	}

	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		errs = append(errs, fmt.Errorf("uname: %w", err))
	} else {
		f.Kernel = unix.ByteSliceToString(uts.Release[:])
	}

	if mem, err := memTotal(meminfoPath); err != nil {
		errs = append(errs, err)
	} else {
		f.MemoryBytes = mem
	}

	var st unix.Statfs_t
	if err := unix.Statfs(dataDir, &st); err != nil {
		errs = append(errs, fmt.Errorf("statfs %s: %w", dataDir, err))
	} else {
		f.DiskBytes = st.Blocks * uint64(st.Bsize)
	}

	f.Capabilities = Capabilities()
	return f, errors.Join(errs...)
}

// Capabilities returns the names of the services installed on this host,
// sorted.
func Capabilities() []string {
	var caps []string
	for _, c := range capabilities {
		if c.installed() {
			caps = append(caps, c.name)
		}
	}
	slices.Sort(caps)
	return caps
}

func (c capability) installed() bool {
	for _, p := range c.paths {
		if isExecutable(p) {
			return true
		}
	}
	for _, g := range c.globs {
		// filepath.Glob only fails on a malformed pattern, and ours are fixed.
		matches, _ := filepath.Glob(g)
		for _, m := range matches {
			if isExecutable(m) {
				return true
			}
		}
	}
	return false
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func prettyName() (string, error) {
	var errs []error
	for _, p := range osReleasePaths {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", p, err))
			continue
		}
		if name, ok := parseOSRelease(data)["PRETTY_NAME"]; ok && name != "" {
			return name, nil
		}
		errs = append(errs, fmt.Errorf("%s has no PRETTY_NAME", p))
	}
	if len(errs) == 0 {
		return "", fmt.Errorf("no os-release file in %v", osReleasePaths)
	}
	return "", errors.Join(errs...)
}

// parseOSRelease parses the os-release(5) format: KEY=value lines where the
// value may be quoted with shell-like escapes. It is parsed here, never
// sourced by a shell.
func parseOSRelease(data []byte) map[string]string {
	vals := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		vals[key] = unquoteOSRelease(val)
	}
	return vals
}

func unquoteOSRelease(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		q := v[0]
		v = v[1 : len(v)-1]
		if q == '\'' {
			return v
		}
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if v[i] == '\\' && i+1 < len(v) && strings.IndexByte("\\$\"`", v[i+1]) >= 0 {
				i++
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	return v
}

func memTotal(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected MemTotal line %q", path, line)
		}
		kb, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: parse MemTotal: %w", path, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("%s has no MemTotal", path)
}
