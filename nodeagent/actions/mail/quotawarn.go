package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/validate"
)

// QuotaWarningCommand is the hidden npanel subcommand Dovecot's
// quota-warning service runs (through Dovecot's "script" helper, no
// shell): npanel mail-quota-warning --lda LDA --config CONF --from ADDR
// PERCENT USER.
const QuotaWarningCommand = "mail-quota-warning"

var senderRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._+-]*@[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// quotaWarningCommand is the program and fixed arguments of Dovecot's
// quota-warning service, or none when dovecot-lda is not installed.
func (m *Module) quotaWarningCommand(logger *slog.Logger, mp platform.MailPaths, mailname string) ([]string, error) {
	if _, err := os.Stat(mp.DovecotLDA); err != nil {
		return nil, nil
	}
	prog := m.Program
	if prog == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		prog = exe
	}
	if !dovecotSafeArg(prog) {
		// Mail works without the warning; say why it is off.
		if logger != nil {
			logger.Warn("mail: no quota warnings: the agent's binary path cannot be written to Dovecot's configuration", "path", prog)
		}
		return nil, nil
	}
	return append([]string{prog}, quotaWarningArgs(mp.DovecotLDA, mp.Doveadm, mp.DovecotConfig, "postmaster@"+mailname)...), nil
}

// quotaWarningArgs is the fixed part of the service's command line, after
// the program; Dovecot appends PERCENT and USER (from quota_warning). Its
// script helper appends whatever a client of the socket sends, so the
// fixed part ends the flags: anything appended is positional.
func quotaWarningArgs(lda, doveadm, conf, from string) []string {
	return []string{QuotaWarningCommand, "--lda", lda, "--doveadm", doveadm, "--config", conf, "--from", from, "--"}
}

// QuotaWarningMain is `npanel mail-quota-warning`: it delivers a short
// warning to USER's INBOX with dovecot-lda (quota not enforced for it, so
// it arrives even when the mailbox is nearly full). The quota-warning
// socket is open to every account's mail processes, so nothing it is given
// is trusted: PERCENT must be a number from 1 to 100, USER a valid mail
// address, and the warning is sent only when USER's storage really is at
// PERCENT or above (doveadm quota get). It returns the exit status.
func QuotaWarningMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(QuotaWarningCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	lda := fs.String("lda", "", "dovecot-lda binary")
	doveadm := fs.String("doveadm", "", "doveadm binary")
	conf := fs.String("config", "", "Dovecot configuration")
	from := fs.String("from", "", "sender address of the warning")
	if !slices.Contains(args, "--") {
		fmt.Fprintf(stderr, "npanel %s: the flags must end with --\n", QuotaWarningCommand)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := quotaWarning(ctx, *lda, *doveadm, *conf, *from, fs.Args()); err != nil {
		fmt.Fprintf(stderr, "npanel %s: %v\n", QuotaWarningCommand, err)
		return 1
	}
	return 0
}

func quotaWarning(ctx context.Context, lda, doveadm, conf, from string, args []string) error {
	if len(args) != 2 {
		return errors.New("want PERCENT USER")
	}
	for _, p := range []string{lda, doveadm, conf} {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("%q is not an absolute path", p)
		}
	}
	percent, err := strconv.Atoi(args[0])
	if err != nil || percent < 1 || percent > 100 {
		return fmt.Errorf("bad percentage %q", args[0])
	}
	user, _, _, err := validate.MailAddress(args[1])
	if err != nil {
		return fmt.Errorf("user: %w", err)
	}
	// The sender is postmaster@ the node's mail name, from the
	// configuration rather than the caller; it may be a name no hosted
	// domain could have (a .test node in development), so it is checked
	// for shape only: nothing that could end a header line.
	if !senderRE.MatchString(from) || len(from) > 254 {
		return fmt.Errorf("from: %q is not a plain address", from)
	}
	sender, senderDomain := from, from[strings.LastIndexByte(from, '@')+1:]
	used, err := storagePercent(ctx, doveadm, conf, user)
	if err != nil {
		return err
	}
	if used < percent {
		return fmt.Errorf("%s is at %d%% of its quota, not %d%%: no warning", user, used, percent)
	}
	msg := quotaWarningMessage(sender, senderDomain, user, percent, time.Now())
	cmd := exec.CommandContext(ctx, lda, "-c", conf, "-d", user, "-f", sender,
		"-o", "plugin/quota=maildir:User quota:noenforcing")
	cmd.Stdin = bytes.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dovecot-lda: %w: %s", err, tail(out))
	}
	return nil
}

// storagePercent is USER's storage use in percent of its limit, from
// `doveadm quota get`.
func storagePercent(ctx context.Context, doveadm, conf, user string) (int, error) {
	out, err := exec.CommandContext(ctx, doveadm, "-c", conf, "-f", "tab", "quota", "get", "-u", user).Output()
	if err != nil {
		return 0, fmt.Errorf("doveadm quota get: %w", err)
	}
	// Columns: Quota name, Type, Value, Limit, %.
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Split(l, "\t")
		if len(f) >= 5 && f[1] == "STORAGE" {
			n, err := strconv.Atoi(strings.TrimSpace(f[4]))
			if err != nil {
				return 0, fmt.Errorf("doveadm quota get: %q", l)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("doveadm quota get: no storage quota for %s", user)
}

// quotaWarningMessage builds the warning. Every header value is a
// validated address, a number or a fixed text, so none can hold a line
// break.
func quotaWarningMessage(from, fromDomain, to string, percent int, now time.Time) []byte {
	var id [12]byte
	_, _ = rand.Read(id[:])
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Mail system <%s>\r\n", from)
	fmt.Fprintf(&b, "To: <%s>\r\n", to)
	fmt.Fprintf(&b, "Subject: Your mailbox is %d%% full\r\n", percent)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <quota.%s@%s>\r\n", hex.EncodeToString(id[:]), fromDomain)
	b.WriteString("Auto-Submitted: auto-generated\r\n")
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	fmt.Fprintf(&b, "Your mailbox %s has used %d%% or more of its storage quota.\r\n\r\n", to, percent)
	b.WriteString("When it is full, new messages to it are refused. Delete or archive\r\n")
	b.WriteString("old messages, or ask for a larger quota.\r\n")
	return b.Bytes()
}
