package backup

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Limits on the wire form.
const (
	maxIDLen        = 64
	maxPathLen      = 4096
	maxStateJSON    = 16 << 20
	maxDatabases    = 1000
	maxSealed       = 4096
	maxS3Field      = 256
	maxRetentionKep = 1000
	maxZoneFiles    = 1000
	maxZoneError    = 1024
	maxCertificates = 1000
)

// backupID accepts a backup's (or restore's) id: it ends up in a restic
// tag and a directory name, so only [A-Za-z0-9-] (UUIDs, ULIDs).
func backupID(field, s string) error {
	if s == "" {
		return fmt.Errorf("%s must not be empty", field)
	}
	if len(s) > maxIDLen {
		return fmt.Errorf("%s is %d bytes long; at most %d", field, len(s), maxIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' && i > 0) {
			return fmt.Errorf("%s %q: only letters, digits and '-' (not first)", field, s)
		}
	}
	return nil
}

// homePath cleans a file or folder path relative to the account's home:
// "" and "." mean the whole home. It refuses absolute paths, ".."
// components, NUL and control bytes, and returns the path in slash form
// without a trailing slash.
func homePath(p string) (string, error) {
	if p == "" || p == "." {
		return ".", nil
	}
	if len(p) > maxPathLen {
		return "", fmt.Errorf("path is %d bytes long; at most %d", len(p), maxPathLen)
	}
	if strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path %q must be relative to the home", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x20 || p[i] == 0x7f {
			return "", fmt.Errorf("path %q contains a control character", p)
		}
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Errorf("path %q must not contain \"..\"", p)
		}
	}
	c := path.Clean(p)
	if c == "." {
		return ".", nil
	}
	// restic's --include is a pattern: refuse its metacharacters rather
	// than let a name match more than itself.
	if strings.ContainsAny(c, "*?[\\") {
		return "", fmt.Errorf("path %q contains a pattern character (* ? [ \\)", p)
	}
	return c, nil
}

// validateRepository checks a repository's wire form for kind.
func validateRepository(r *agentpb.BackupRepository, allowTest bool) error {
	if r == nil {
		return errors.New("repository is required")
	}
	if err := validate.UsernameOrTest(r.GetUsername(), allowTest); err != nil {
		return err
	}
	if err := validate.ObjectName("target", r.GetTarget()); err != nil {
		return err
	}
	if n := len(r.GetSealedPassword()); n == 0 || n > maxSealed {
		return errors.New("repository: a sealed password is required")
	}
	switch r.GetKind() {
	case agentpb.BackupTargetKind_BACKUP_TARGET_KIND_LOCAL:
	case agentpb.BackupTargetKind_BACKUP_TARGET_KIND_S3:
		u, err := url.Parse(r.GetS3Endpoint())
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("s3 endpoint %q: want https://host[:port]", r.GetS3Endpoint())
		}
		if err := s3Bucket(r.GetS3Bucket()); err != nil {
			return err
		}
		if p := r.GetS3Prefix(); p != "" {
			if err := s3Prefix(p); err != nil {
				return err
			}
		}
		if err := plainField("s3 region", r.GetS3Region(), false); err != nil {
			return err
		}
		if err := plainField("s3 access key id", r.GetS3AccessKeyId(), true); err != nil {
			return err
		}
		if n := len(r.GetSealedS3SecretKey()); n == 0 || n > maxSealed {
			return errors.New("repository: a sealed S3 secret key is required")
		}
	case agentpb.BackupTargetKind_BACKUP_TARGET_KIND_NODE:
		host, port, err := net.SplitHostPort(r.GetSftpAddress())
		if err != nil {
			return fmt.Errorf("sftp address %q: %w", r.GetSftpAddress(), err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("sftp address %q: bad port", r.GetSftpAddress())
		}
		if net.ParseIP(host) == nil {
			if _, err := validate.Domain(host); err != nil {
				return fmt.Errorf("sftp address %q: %w", r.GetSftpAddress(), err)
			}
		}
		if err := sftpUser(r.GetSftpUser()); err != nil {
			return err
		}
		if err := hostKey(r.GetSftpHostKey()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("repository kind %v is not supported", r.GetKind())
	}
	return nil
}

// s3Bucket accepts an S3 bucket name (3-63 of [a-z0-9.-]).
func s3Bucket(s string) error {
	if len(s) < 3 || len(s) > 63 {
		return fmt.Errorf("s3 bucket %q: 3 to 63 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("s3 bucket %q: only a-z, 0-9, '.' and '-'", s)
		}
	}
	return nil
}

// s3Prefix accepts a key prefix of clean slash-separated segments.
func s3Prefix(s string) error {
	if len(s) > maxS3Field {
		return errors.New("s3 prefix is too long")
	}
	for _, seg := range strings.Split(s, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("s3 prefix %q: empty, '.' or '..' segment", s)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
				return fmt.Errorf("s3 prefix %q: only letters, digits, '-', '_', '.' and '/'", s)
			}
		}
	}
	return nil
}

// plainField accepts a printable ASCII token without spaces.
func plainField(field, s string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s is required", field)
		}
		return nil
	}
	if len(s) > maxS3Field {
		return fmt.Errorf("%s is too long", field)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("%s: only printable ASCII without spaces", field)
		}
	}
	return nil
}

// sftpUser accepts the backup node's login (it ends up in an ssh argv).
func sftpUser(s string) error {
	if s == "" || len(s) > 32 {
		return fmt.Errorf("sftp user %q: 1 to 32 characters", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || (c == '-' || c == '_') && i > 0) {
			return fmt.Errorf("sftp user %q: only a-z, 0-9, '-' and '_'", s)
		}
	}
	return nil
}

// hostKey accepts "ssh-ed25519 BASE64" (the form the backup node reports).
func hostKey(s string) error {
	typ, key, ok := strings.Cut(s, " ")
	if !ok || typ != "ssh-ed25519" || key == "" || len(key) > 200 {
		return fmt.Errorf("sftp host key: want \"ssh-ed25519 AAAA...\"")
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return fmt.Errorf("sftp host key: not base64")
		}
	}
	return nil
}

// database validates a database of username's.
func database(d *agentpb.BackupDatabase, username string) error {
	if d == nil {
		return errors.New("database is required")
	}
	if err := validate.Engine(d.GetEngine()); err != nil {
		return err
	}
	return validate.DatabaseName(d.GetName(), username)
}

// Validate implements actions.Action.
func (a *BackupAccount) Validate() error {
	if err := backupID("backup id", a.req.GetBackupId()); err != nil {
		return err
	}
	if err := validateRepository(a.req.GetRepository(), a.allowTest); err != nil {
		return err
	}
	if len(a.req.GetDatabases()) > maxDatabases {
		return fmt.Errorf("%d databases; at most %d", len(a.req.GetDatabases()), maxDatabases)
	}
	seen := map[string]bool{}
	for _, d := range a.req.GetDatabases() {
		if err := database(d, a.req.GetRepository().GetUsername()); err != nil {
			return err
		}
		k := d.GetEngine() + "/" + d.GetName()
		if seen[k] {
			return fmt.Errorf("database %s listed twice", k)
		}
		seen[k] = true
	}
	if len(a.req.GetStateJson()) > maxStateJSON {
		return errors.New("state_json is too large")
	}
	if err := zoneFiles(a.req.GetZoneFiles()); err != nil {
		return err
	}
	sites := make([]string, 0, len(a.req.GetCertificates()))
	for _, c := range a.req.GetCertificates() {
		if len(c.GetChainPem()) == 0 || len(c.GetChainPem()) > validate.MaxCertPEMBytes {
			return fmt.Errorf("certificate of %s: chain of %d bytes", c.GetSite(), len(c.GetChainPem()))
		}
		sites = append(sites, c.GetSite())
	}
	if err := certificateSites(sites); err != nil {
		return err
	}
	if r := a.req.GetRetention(); r != nil && (r.GetDaily() > maxRetentionKep || r.GetWeekly() > maxRetentionKep || r.GetMonthly() > maxRetentionKep) {
		return errors.New("retention: at most 1000 of each")
	}
	return nil
}

// certificateSites checks the sites whose certificates an action names.
func certificateSites(sites []string) error {
	if len(sites) > maxCertificates {
		return fmt.Errorf("%d certificates; at most %d", len(sites), maxCertificates)
	}
	seen := map[string]bool{}
	for _, s := range sites {
		if err := validate.CanonicalDomain(s); err != nil {
			return fmt.Errorf("certificate: %w", err)
		}
		if seen[s] {
			return fmt.Errorf("certificate of %s listed twice", s)
		}
		seen[s] = true
	}
	return nil
}

// zoneFiles checks the zone files of a backup: a zone's name becomes a
// restic tag and a file name in the snapshot, so it must be a canonical
// domain.
func zoneFiles(zf []*agentpb.BackupZoneFile) error {
	if len(zf) > maxZoneFiles {
		return fmt.Errorf("%d zone files; at most %d", len(zf), maxZoneFiles)
	}
	seen := map[string]bool{}
	for _, z := range zf {
		if err := validate.CanonicalDomain(z.GetName()); err != nil {
			return fmt.Errorf("zone file: %w", err)
		}
		if seen[z.GetName()] {
			return fmt.Errorf("zone %s listed twice", z.GetName())
		}
		seen[z.GetName()] = true
		switch {
		case len(z.GetText()) > dnszone.MaxZoneFileBytes:
			return fmt.Errorf("zone file %s is %d bytes; at most %d", z.GetName(), len(z.GetText()), dnszone.MaxZoneFileBytes)
		case len(z.GetError()) > maxZoneError:
			return fmt.Errorf("zone file %s: error is too long", z.GetName())
		case (z.GetText() == "") == (z.GetError() == ""):
			return fmt.Errorf("zone file %s: exactly one of text and error must be set", z.GetName())
		}
	}
	return nil
}

// Validate implements actions.Action.
func (a *RestoreBackup) Validate() error {
	r := a.req
	if err := backupID("restore id", r.GetRestoreId()); err != nil {
		return err
	}
	if err := backupID("backup id", r.GetBackupId()); err != nil {
		return err
	}
	if err := validateRepository(r.GetRepository(), a.allowTest); err != nil {
		return err
	}
	user := r.GetRepository().GetUsername()
	if err := certificateSites(r.GetCertificateSites()); err != nil {
		return err
	}
	if len(r.GetCertificateSites()) > 0 && r.GetWhat() != agentpb.RestoreWhat_RESTORE_WHAT_ALL {
		return errors.New("certificates are restored only with the whole account")
	}
	switch r.GetWhat() {
	case agentpb.RestoreWhat_RESTORE_WHAT_ALL, agentpb.RestoreWhat_RESTORE_WHAT_ZONE:
	case agentpb.RestoreWhat_RESTORE_WHAT_FILES:
		if _, err := homePath(r.GetPath()); err != nil {
			return err
		}
	case agentpb.RestoreWhat_RESTORE_WHAT_DATABASE:
		if err := database(r.GetDatabase(), user); err != nil {
			return err
		}
		into := r.GetDatabaseInto()
		if into == "" && !r.GetInPlace() {
			return errors.New("database_into is required to restore side by side")
		}
		if into != "" {
			if err := validate.DatabaseName(into, user); err != nil {
				return err
			}
		}
	case agentpb.RestoreWhat_RESTORE_WHAT_MAILBOX:
		addr, _, _, err := validate.MailAddress(r.GetMailbox())
		if err != nil {
			return err
		}
		if addr != r.GetMailbox() {
			return fmt.Errorf("mailbox %q is not in canonical form (%q)", r.GetMailbox(), addr)
		}
	default:
		return fmt.Errorf("restore of %v is not supported", r.GetWhat())
	}
	return nil
}

// Validate implements actions.Action.
func (a *VerifyBackup) Validate() error {
	if err := backupID("backup id", a.req.GetBackupId()); err != nil {
		return err
	}
	return validateRepository(a.req.GetRepository(), a.allowTest)
}

// Validate implements actions.Action.
func (a *ForgetBackup) Validate() error {
	if !a.req.GetAll() {
		if err := backupID("backup id", a.req.GetBackupId()); err != nil {
			return err
		}
	} else if a.req.GetBackupId() != "" {
		return errors.New("either a backup id or all, not both")
	}
	return validateRepository(a.req.GetRepository(), a.allowTest)
}
