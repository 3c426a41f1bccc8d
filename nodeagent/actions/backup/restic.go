package backup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Fixed binaries. restic runs under nice and ionice (idle class) so that a
// backup takes what the sites leave: nice -n 10 ionice -c 3 restic ...;
// each execs the next, so the PID the agent waits for is restic's.
const (
	resticBin = "/usr/bin/restic"
	niceBin   = "/usr/bin/nice"
	ioniceBin = "/usr/bin/ionice"
)

// resticRun is one restic invocation's setup: the repository, the
// password (kept only in memory, handed over through a pipe) and the
// environment of the short-lived process.
type resticRun struct {
	repo     *repository
	cacheDir string
	// secrets are scrubbed from every error text.
	secrets []string
}

// cmd builds restic with args. The password reaches restic on fd 3 (a
// pipe written and closed before it starts: a password is far below the
// pipe's buffer), never through argv, the environment or a file. The
// returned cleanup closes the parent's end.
func (r *resticRun) cmd(ctx context.Context, args ...string) (*exec.Cmd, func(), error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	if _, err := pw.Write(r.repo.password); err != nil {
		pr.Close()
		pw.Close()
		return nil, nil, err
	}
	pw.Close()
	argv := []string{resticBin}
	if _, err := os.Stat(niceBin); err == nil {
		if _, err := os.Stat(ioniceBin); err == nil {
			argv = []string{niceBin, "-n", "10", ioniceBin, "-c", "3", resticBin}
		}
	}
	argv = append(argv, "--repo", r.repo.location, "--password-file", "/dev/fd/3", "--cache-dir", r.cacheDir)
	argv = append(argv, r.repo.options...)
	argv = append(argv, args...)
	c := exec.CommandContext(ctx, argv[0], argv[1:]...)
	c.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "LC_ALL=C", "RESTIC_PROGRESS_FPS=1"}, r.repo.env...)
	c.ExtraFiles = []*os.File{pr}
	// Its own process group: a cancelled run is ended with its children
	// (ssh for SFTP). SIGINT lets restic remove its lock on the way out.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGINT) }
	c.WaitDelay = 10 * time.Second
	return c, func() { pr.Close() }, nil
}

// run runs restic with args and returns its stdout.
func (r *resticRun) run(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	c, done, err := r.cmd(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer done()
	var out bytes.Buffer
	var stderr limitedBuf
	c.Stdin, c.Stdout, c.Stderr = stdin, &out, &stderr
	if err := c.Run(); err != nil {
		return out.Bytes(), r.fail(args, err, stderr.b)
	}
	return out.Bytes(), nil
}

// resticError is a failed restic run; Stderr is scrubbed of secrets.
type resticError struct {
	Cmd    string
	Err    error
	Stderr string
}

func (e *resticError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("restic %s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("restic %s: %v: %s", e.Cmd, e.Err, e.Stderr)
}

func (e *resticError) Unwrap() error { return e.Err }

// locked says whether err is restic refusing a locked repository.
func locked(err error) bool {
	var re *resticError
	return errors.As(err, &re) && strings.Contains(re.Stderr, "repository is already locked")
}

func (r *resticRun) fail(args []string, err error, stderr []byte) error {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	return &resticError{Cmd: cmd, Err: err, Stderr: r.scrub(strings.TrimSpace(string(stderr)))}
}

// scrub removes the secrets from s (restic never prints the password,
// but an S3 error may echo a credential).
func (r *resticRun) scrub(s string) string {
	for _, sec := range r.secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// limitedBuf keeps the first 8 KiB of a tool's stderr for error messages.
type limitedBuf struct{ b []byte }

func (l *limitedBuf) Write(p []byte) (int, error) {
	if room := 8192 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// backupSummary is restic backup --json's last line.
type backupSummary struct {
	MessageType         string  `json:"message_type"`
	FilesNew            uint64  `json:"files_new"`
	FilesChanged        uint64  `json:"files_changed"`
	DataAdded           uint64  `json:"data_added"`
	TotalFilesProcessed uint64  `json:"total_files_processed"`
	TotalBytesProcessed uint64  `json:"total_bytes_processed"`
	TotalDuration       float64 `json:"total_duration"`
	SnapshotID          string  `json:"snapshot_id"`
}

// backupStatus is one of restic backup --json's progress lines.
type backupStatus struct {
	MessageType string `json:"message_type"`
	TotalFiles  uint64 `json:"total_files"`
	FilesDone   uint64 `json:"files_done"`
	TotalBytes  uint64 `json:"total_bytes"`
	BytesDone   uint64 `json:"bytes_done"`
	Message     string `json:"message"` // message_type "error"
	Item        string `json:"item"`
}

// backupRun is a started restic backup --json.
type backupRun struct {
	c       *exec.Cmd
	done    func()
	stderr  *limitedBuf
	summary *backupSummary
	errs    []string
	lines   chan struct{}
	r       *resticRun
	args    []string
}

// startBackup starts restic backup --json with args, feeding progress to
// status. stdin, if set, becomes restic's stdin (a --stdin backup).
func (r *resticRun) startBackup(ctx context.Context, stdin *os.File, status func(backupStatus), args ...string) (*backupRun, error) {
	args = append([]string{"backup", "--json"}, args...)
	c, done, err := r.cmd(ctx, args...)
	if err != nil {
		return nil, err
	}
	b := &backupRun{c: c, done: done, stderr: &limitedBuf{}, lines: make(chan struct{}), r: r, args: args}
	if stdin != nil {
		c.Stdin = stdin
	}
	c.Stderr = b.stderr
	out, err := c.StdoutPipe()
	if err != nil {
		done()
		return nil, err
	}
	if err := c.Start(); err != nil {
		done()
		return nil, r.fail(args, err, nil)
	}
	go func() {
		defer close(b.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			var probe struct {
				MessageType string `json:"message_type"`
			}
			if json.Unmarshal(line, &probe) != nil {
				continue
			}
			switch probe.MessageType {
			case "summary":
				var s backupSummary
				if json.Unmarshal(line, &s) == nil {
					b.summary = &s
				}
			case "status":
				var s backupStatus
				if json.Unmarshal(line, &s) == nil && status != nil {
					status(s)
				}
			case "error":
				var s backupStatus
				if json.Unmarshal(line, &s) == nil && len(b.errs) < 20 {
					b.errs = append(b.errs, r.scrub(s.Item+": "+s.Message))
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	return b, nil
}

// wait waits for the backup; a snapshot restic wrote is returned even
// with an error (exit status 3: some files could not be read).
func (b *backupRun) wait() (*backupSummary, error) {
	<-b.lines
	err := b.c.Wait()
	b.done()
	if err != nil {
		return b.summary, b.r.fail(b.args, err, b.stderr.b)
	}
	if b.summary == nil || b.summary.SnapshotID == "" {
		return nil, b.r.fail(b.args, errors.New("no summary"), b.stderr.b)
	}
	return b.summary, nil
}

// snapshot is one entry of restic snapshots --json.
type snapshot struct {
	ID       string    `json:"id"`
	ShortID  string    `json:"short_id"`
	Time     time.Time `json:"time"`
	Hostname string    `json:"hostname"`
	Paths    []string  `json:"paths"`
	Tags     []string  `json:"tags"`
}

func (s snapshot) tag(key string) string {
	for _, t := range s.Tags {
		if v, ok := strings.CutPrefix(t, key+"="); ok {
			return v
		}
	}
	return ""
}

// snapshots lists the repository's snapshots, those carrying every tag
// of tags when given.
func (r *resticRun) snapshots(ctx context.Context, tags ...string) ([]snapshot, error) {
	args := []string{"snapshots", "--json", "--no-lock"}
	if len(tags) > 0 {
		args = append(args, "--tag", strings.Join(tags, ","))
	}
	out, err := r.run(ctx, nil, args...)
	if err != nil {
		return nil, err
	}
	var s []snapshot
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("restic snapshots: %w", err)
	}
	return s, nil
}
