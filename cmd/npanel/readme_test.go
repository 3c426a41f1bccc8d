package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
)

// The README's walk-through, run as written on a fresh `make dev` cluster:
// every command of the marked section in order, each one failing the test
// on a non-zero exit or when an expected line ("#> text" under it) is not
// in its output. A README that drifts from the code fails CI.
func TestREADMEWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dev cluster with its real daemons")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := parseWalkthrough(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	// The dev cluster's fixed ports are the README's; someone else's dev
	// cluster on them would answer instead of ours.
	for _, port := range []int{8080, 7443, 8081, 8082, 5301, 5302, 8181, 8182} {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			t.Fatalf("port %d is taken (is a make dev cluster running?): %v", port, err)
		} else {
			l.Close()
		}
	}

	// A checkout as the README's reader has it after make dev: bin/npanel,
	// .dev/ and a home of their own for ctl's saved token.
	// Not t.TempDir: its parent is private, and nginx's workers and MariaDB
	// must traverse the path to the dev nodes' files.
	dir, err := os.MkdirTemp("", "npanel-readme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(binary, filepath.Join(dir, "bin", "npanel")); err != nil {
		b, err := os.ReadFile(binary)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "bin", "npanel"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The accounts' Linux users are the walk-through's; one left by an
	// earlier dev cluster would be refused by the agent, rightly.
	for _, s := range steps {
		if len(s.argv) > 4 && s.argv[1] == "ctl" && s.argv[2] == "account" && s.argv[3] == "create" && testenv.HasUser(s.argv[4]) {
			t.Fatalf("the Linux user %s exists (left by a make dev cluster? make clean in its checkout removes it)", s.argv[4])
		}
	}
	t.Cleanup(func() { removeUsersUnder(t, dir) })
	// Webmail's pool user is a system user the dev agents create on first
	// use; one the test made goes with it.
	if _, err := user.Lookup(webmailUser); err != nil {
		t.Cleanup(func() {
			if out, err := exec.Command("/usr/sbin/userdel", webmailUser).CombinedOutput(); err != nil {
				t.Errorf("userdel %s: %v: %s", webmailUser, err, out)
			}
		})
	}
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config"), "NPANEL_SERVER=", "NPANEL_TOKEN="}

	dev := exec.Command(filepath.Join(dir, "bin", "npanel"), "dev", "--data-dir", ".dev")
	dev.Dir, dev.Env = dir, append(os.Environ(), env...)
	var devOut syncBuffer
	dev.Stdout, dev.Stderr = &devOut, &devOut
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = dev.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = dev.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = dev.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("make dev output:\n%s", devOut.String())
		}
	})
	testenv.WaitFor(t, 3*time.Minute, "the dev banner", func() bool {
		return strings.Contains(devOut.String(), "nPanel dev cluster is up")
	})

	for _, s := range steps {
		deadline := time.Now().Add(s.within)
		for {
			out, err := s.run(t.Context(), dir, env)
			missing := slices.IndexFunc(s.expect, func(want string) bool { return !strings.Contains(out, want) })
			if err == nil && missing < 0 {
				break
			}
			switch {
			case !time.Now().After(deadline):
			case err != nil:
				t.Fatalf("README line %d: %s\n%v\n%s", s.line, s.text, err, out)
			default:
				t.Fatalf("README line %d: %s\noutput lacks %q:\n%s", s.line, s.text, s.expect[missing], out)
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("README line %d: %s: ok", s.line, s.text)
	}
}

// removeUsersUnder removes the Linux users whose home is below dir: the dev
// cluster's accounts, when the walk-through failed before deleting them.
// webmailUser is the system user Roundcube's PHP-FPM pool runs as.
const webmailUser = "npanel-webmail"

func removeUsersUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Error(err)
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 5 && strings.HasPrefix(f[5], dir+"/") {
			if out, err := exec.Command("/usr/sbin/userdel", "-f", f[0]).CombinedOutput(); err != nil {
				t.Errorf("userdel %s: %v: %s", f[0], err, out)
			}
		}
	}
}

const (
	walkthroughStart = "<!-- walkthrough -->"
	walkthroughEnd   = "<!-- end walkthrough -->"
)

// step is one command of the walk-through.
type step struct {
	line   int // in the README, for the failure message
	text   string
	argv   []string
	stdin  string // file to read standard input from ("< file")
	stdout string // file to write standard output to ("> file")
	expect []string
	// within is how long the command may be repeated until it succeeds
	// with the expected lines ("#> within 30s: text"): for what the cluster
	// does after the command that asked for it returned, like a zone
	// transfer.
	within time.Duration
}

// parseWalkthrough takes the commands of the sh code blocks between the
// markers. A command is split into words like a shell would (quotes, a
// trailing # comment) but runs without one: "< file" and "> file" are the
// only redirections, and pipes, variables and globs are refused, so the
// README says everything the test does.
func parseWalkthrough(readme string) ([]step, error) {
	start := strings.Index(readme, walkthroughStart)
	end := strings.Index(readme, walkthroughEnd)
	if start < 0 || end < start {
		return nil, fmt.Errorf("README has no %s ... %s section", walkthroughStart, walkthroughEnd)
	}
	first := strings.Count(readme[:start], "\n") + 1
	var steps []step
	inBlock := false
	for i, line := range strings.Split(readme[start:end], "\n") {
		n := first + i
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "```"):
			inBlock = !inBlock && (trimmed == "```sh" || trimmed == "```bash")
			continue
		case !inBlock || trimmed == "":
			continue
		case strings.HasPrefix(trimmed, "#>"):
			if len(steps) == 0 {
				return nil, fmt.Errorf("README line %d: an expected output before any command", n)
			}
			s := &steps[len(steps)-1]
			want := strings.TrimSpace(strings.TrimPrefix(trimmed, "#>"))
			if rest, ok := strings.CutPrefix(want, "within "); ok {
				d, text, ok := strings.Cut(rest, ": ")
				within, err := time.ParseDuration(d)
				if !ok || err != nil || within <= 0 || within > 5*time.Minute {
					return nil, fmt.Errorf("README line %d: want \"#> within DURATION: text\"", n)
				}
				s.within, want = within, text
			}
			s.expect = append(s.expect, want)
			continue
		case strings.HasPrefix(trimmed, "#"):
			continue
		}
		s, err := parseCommand(trimmed)
		if err != nil {
			return nil, fmt.Errorf("README line %d: %w", n, err)
		}
		s.line = n
		steps = append(steps, s)
	}
	if len(steps) == 0 {
		return nil, errors.New("the README's walk-through has no commands")
	}
	return steps, nil
}

func parseCommand(line string) (step, error) {
	s := step{}
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '#' && !inWord:
			goto done
		case strings.ContainsRune("|&;$`*?(){}", r):
			return s, fmt.Errorf("%q: the walk-through runs without a shell, so %q is not allowed", line, r)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return s, fmt.Errorf("%q: unterminated quote", line)
	}
done:
	if inWord {
		words = append(words, cur.String())
	}
	for i := 0; i < len(words); i++ {
		switch words[i] {
		case "<", ">":
			if i+1 >= len(words) {
				return s, fmt.Errorf("%q: %s without a file", line, words[i])
			}
			if words[i] == "<" {
				s.stdin = words[i+1]
			} else {
				s.stdout = words[i+1]
			}
			i++
		default:
			s.argv = append(s.argv, words[i])
		}
	}
	if len(s.argv) == 0 {
		return s, fmt.Errorf("%q: no command", line)
	}
	s.text = strings.TrimSpace(strings.SplitN(line, " #", 2)[0])
	return s, nil
}

// run runs the step in dir and returns its output (standard output and
// error, or only error when standard output goes to a file).
func (s step) run(ctx context.Context, dir string, env []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.argv[0], s.argv[1:]...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	if s.stdin != "" {
		f, err := os.Open(filepath.Join(dir, s.stdin))
		if err != nil {
			return "", err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	var out bytes.Buffer
	cmd.Stderr = &out
	if s.stdout != "" {
		f, err := os.Create(filepath.Join(dir, s.stdout))
		if err != nil {
			return "", err
		}
		defer f.Close()
		cmd.Stdout = f
	} else {
		cmd.Stdout = &out
	}
	err := cmd.Run()
	return out.String(), err
}

func TestParseWalkthrough(t *testing.T) {
	readme := "intro\n" + walkthroughStart + "\n```sh\n" +
		"bin/npanel ctl login --password-stdin < .dev/pw   # saves a token\n" +
		"#> Logged in\n" +
		"curl -s -H 'Host: a.test' http://127.0.0.1:8081/\n" +
		"#> within 10s: hosted on nPanel\n" +
		"echo \"<?php echo 1;\" > x.php\n" +
		"```\n" + walkthroughEnd + "\nbin/npanel not this\n"
	steps, err := parseWalkthrough(readme)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 {
		t.Fatalf("%d steps: %+v", len(steps), steps)
	}
	if got := steps[0]; strings.Join(got.argv, "|") != "bin/npanel|ctl|login|--password-stdin" || got.stdin != ".dev/pw" || got.expect[0] != "Logged in" || got.line != 4 {
		t.Errorf("step 0: %+v", got)
	}
	if got := steps[1]; strings.Join(got.argv, "|") != "curl|-s|-H|Host: a.test|http://127.0.0.1:8081/" || got.within != 10*time.Second || got.expect[0] != "hosted on nPanel" {
		t.Errorf("step 1: %+v", got)
	}
	if got := steps[2]; strings.Join(got.argv, "|") != "echo|<?php echo 1;" || got.stdout != "x.php" {
		t.Errorf("step 2: %+v", got)
	}
	for _, bad := range []string{"cat x | bin/npanel", "echo $HOME", "ls *", "echo 'open", "a && b", "x >"} {
		if _, err := parseCommand(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
