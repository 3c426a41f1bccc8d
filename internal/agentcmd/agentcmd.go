// Package agentcmd is the node agent's command line: its flags, its config
// file and the start of nodeagent. `npanel agent` and the npanel-agent
// binary are both this command, so they take the same flags and the same
// /etc/npanel/agent.yaml. It must not reach the server's packages: the
// npanel-agent binary is built from it to stay small (internal/importgraph
// checks).
package agentcmd

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/actions/allowlist"
	"github.com/npanel/npanel/nodeagent/logship"
	"github.com/npanel/npanel/nodeagent/logtail"
	"github.com/npanel/npanel/nodeagent/platform"
)

// New returns the agent command. use is its name ("agent" under npanel,
// "npanel-agent" as a binary of its own); version is the binary's.
func New(use, version string) *cobra.Command {
	var cfg nodeagent.Config
	var servers, modules, tokenFile string
	var lokiPasswordFile, lokiBearerFile string
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run the node agent",
		Long: `Run the node agent. On first start it enrols with a join token (from
"npanel ctl node add") and keeps its key and certificate in --data-dir; later
starts need no token. Give the token in $NPANEL_JOIN_TOKEN or in a file
(--join-token-file, mode 0600): --join-token puts it in the command line,
where every user of the machine sees it (ps, /proc).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Servers = cmdline.SplitList(servers)
			if len(cfg.Servers) == 0 {
				return cmdline.Usagef("--server is required")
			}
			if cfg.DataDir == "" {
				return cmdline.Usagef("--data-dir is required")
			}
			tok, err := joinToken(cfg.JoinToken, tokenFile, cfg.DataDir)
			if err != nil {
				return err
			}
			cfg.JoinToken = tok
			mods, err := allowlist.Modules(cmdline.SplitList(modules))
			if err != nil {
				return cmdline.Usagef("--modules: %v", err)
			}
			cfg.Modules = mods
			cfg.AllowTestUsernames = cmdline.AllowTestUsernames
			cfg.Version = version
			if err := lokiSecrets(&cfg, lokiPasswordFile, lokiBearerFile); err != nil {
				return err
			}
			// The agent's own records: shipped to Loki and kept for
			// serviceLogs(service: "agent").
			cfg.AgentLog = logtail.Handler(slog.Default().Handler(), nil)
			cfg.Logger = slog.New(cfg.AgentLog)
			a, err := nodeagent.New(cfg)
			if err != nil {
				return cmdline.Usagef("%v", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&servers, "server", "", "gateway address host:port; several, comma-separated, are tried in turn (required)")
	f.StringVar(&cfg.JoinToken, "join-token", "", "one-time join token for the first start; visible to every user in ps, prefer $NPANEL_JOIN_TOKEN or --join-token-file")
	f.StringVar(&tokenFile, "join-token-file", "", "file holding the one-time join token (not readable by others)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the node's key, certificate and task journal (required)")
	f.StringVar(&cfg.GossipListen, "gossip-listen", "0.0.0.0:7946", `memberlist listener; "" disables gossip`)
	f.StringVar(&cfg.Platform, "platform", "", "distro profile: alma9 or debian12 (default: detected from /etc/os-release)")
	f.StringVar(&modules, "modules", "all", "service modules to run, comma-separated ("+strings.Join(allowlist.ModuleNames(), ", ")+"), all (every one but backup, which is named alone) or none")
	f.StringVar(&cfg.HTTPListen, "http-listen", "", `address nginx serves sites on (default ":80")`)
	f.StringVar(&cfg.HTTPSListen, "https-listen", "", `address nginx serves sites on over TLS, HTTP/2 (default ":443")`)
	f.StringVar(&cfg.DNSListen, "dns-listen", "", `address PowerDNS answers on (default "0.0.0.0:53")`)
	f.StringVar(&cfg.DNSAPIListen, "dns-api-listen", "", `loopback address of PowerDNS's HTTP API (default "127.0.0.1:8081")`)
	f.StringVar(&cfg.SMTPListen, "smtp-listen", "", `address Exim receives mail on (default ":25")`)
	f.StringVar(&cfg.SubmissionListen, "submission-listen", "", `address of Exim's submission service, STARTTLS + AUTH (default ":587")`)
	f.StringVar(&cfg.SMTPSListen, "smtps-listen", "", `address of Exim's implicit-TLS submission (default ":465")`)
	f.StringVar(&cfg.IMAPListen, "imap-listen", "", `address Dovecot serves IMAP on (default ":143")`)
	f.StringVar(&cfg.IMAPSListen, "imaps-listen", "", `address Dovecot serves IMAPS on (default ":993")`)
	f.StringVar(&cfg.POP3Listen, "pop3-listen", "", `address Dovecot serves POP3 on (default ":110")`)
	f.StringVar(&cfg.POP3SListen, "pop3s-listen", "", `address Dovecot serves POP3S on (default ":995")`)
	f.StringVar(&cfg.MailRelay, "mail-relay", "", `smarthost host:port for mail to remote domains (default: none, MX lookups)`)
	f.BoolFunc("mail-antivirus", "scan mail with ClamAV where clamd and signatures are installed (default true; clamd needs over 1 GB of memory with full signatures)", func(v string) error {
		on, err := strconv.ParseBool(v)
		cfg.NoMailAntivirus = !on
		return err
	})
	f.StringVar(&cfg.SFTPListen, "sftp-listen", "", `address the backup module's own sshd serves SFTP on, for other nodes' backups (default ":2222"; 22 stays the system sshd's)`)
	f.StringVar(&cfg.MigrationListen, "migration-listen", platform.DefaultMigrationListen, `address of the migration endpoint (an SSH server inside the agent) that receives accounts moved to this node; must differ from --sftp-listen on a backup node; "" disables it`)
	f.StringVar(&cfg.MetricsListen, "metrics-listen", ":9469", `address of the agent's /metrics for Prometheus (plain HTTP and TLS on one port; a scrape token or a cluster client certificate is required); "" disables it`)
	f.StringVar(&cfg.BackupUser, "backup-user", "", `Linux user other nodes log in as over SFTP on a backup node (default "npanel-backup")`)
	f.StringVar(&cfg.LokiURL, "loki-url", "", `Loki push endpoint the node's logs are shipped to, e.g. http://loki:3100/loki/api/v1/push ("" ships none)`)
	f.StringVar(&cfg.LokiTenant, "loki-tenant", "", "Loki tenant, sent as X-Scope-OrgID")
	f.StringVar(&cfg.LokiUsername, "loki-username", "", "Loki basic auth user (password in --loki-password-file)")
	f.StringVar(&lokiPasswordFile, "loki-password-file", "", "file holding the Loki basic auth password")
	f.StringVar(&lokiBearerFile, "loki-bearer-token-file", "", "file holding a bearer token for Loki")
	f.Int64Var(&cfg.LokiBufferBytes, "loki-buffer-bytes", logship.DefaultBufferBytes, "bound of the on-disk buffer that holds logs while Loki is unreachable; the oldest are dropped beyond it")
	f.StringVar(&cfg.Prefix, "prefix", "", "move every config, state and log path of the profile under this absolute directory (tests, npanel dev); the user database stays the host's")
	return cmdline.WithConfigFile(cmd)
}

// joinToken picks the join token from at most one of --join-token and
// --join-token-file, else from $NPANEL_JOIN_TOKEN; "" when there is none
// (an enrolled node needs none). A token file others may read is refused:
// it would leak the token as the command line does.
func joinToken(flag, file, dataDir string) (string, error) {
	env := os.Getenv("NPANEL_JOIN_TOKEN")
	// The daemons the agent starts get their own environment, but nothing
	// else needs the token once it is read.
	_ = os.Unsetenv("NPANEL_JOIN_TOKEN")
	switch {
	case flag != "" && file != "":
		return "", cmdline.Usagef("give the join token once: --join-token or --join-token-file, not both")
	case flag != "":
		return flag, nil
	case file == "":
		return strings.TrimSpace(env), nil
	}
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) && enrolled(dataDir) {
		// A spent token may be deleted once the node holds its identity.
		return "", nil
	}
	if err != nil {
		return "", cmdline.Usagef("--join-token-file: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", cmdline.Usagef("--join-token-file: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return "", cmdline.Usagef("--join-token-file %s: not a regular file", file)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", cmdline.Usagef("--join-token-file %s: mode %04o lets other users read the token; chmod 0600 it", file, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", cmdline.Usagef("--join-token-file: %v", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", cmdline.Usagef("--join-token-file %s is empty", file)
	}
	return tok, nil
}

// enrolled reports whether the data dir holds a node identity.
func enrolled(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, nodeagent.IdentityFile))
	return err == nil
}

// lokiSecrets reads the Loki credentials from their files: a secret on
// the command line is visible to every user (ps, /proc).
func lokiSecrets(cfg *nodeagent.Config, passwordFile, bearerFile string) error {
	if passwordFile != "" && cfg.LokiUsername == "" {
		return cmdline.Usagef("--loki-password-file needs --loki-username")
	}
	if bearerFile != "" && cfg.LokiUsername != "" {
		return cmdline.Usagef("give Loki one kind of credentials: --loki-username or --loki-bearer-token-file")
	}
	var err error
	if cfg.LokiPassword, err = logship.ReadSecret(passwordFile); err != nil {
		return cmdline.Usagef("--loki-password-file: %v", err)
	}
	if cfg.LokiBearerToken, err = logship.ReadSecret(bearerFile); err != nil {
		return cmdline.Usagef("--loki-bearer-token-file: %v", err)
	}
	return nil
}
