package migrate

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// What rsync 3.x clients send for the options the source uses.
var goodRsync = []string{
	"rsync --server -lHogtpAXre.iLsfxCIvu --delete --stats --partial --numeric-ids . .",
	"rsync --server -lHogtpAXre.iLsfxCIvu --stats --partial --numeric-ids . .",
	"rsync --server -logtpre.iLsfxCIvu --numeric-ids . .",
	"rsync --server -lHogtpAXr --numeric-ids . .",
}

func TestParseCommandAccepts(t *testing.T) {
	for _, s := range goodRsync {
		c, err := ParseCommand(s)
		if err != nil || c.Kind != Rsync {
			t.Errorf("%q: %v", s, err)
		}
	}
	c, err := ParseCommand("restore-database mariadb alice_shop")
	if err != nil || c.Kind != RestoreDatabase || c.Engine != "mariadb" || c.Database != "alice_shop" {
		t.Errorf("restore: %+v %v", c, err)
	}
	if _, err := ParseCommand("restore-database postgresql alice_shop"); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"checksum-database mariadb alice_shop", "checksum-database postgresql alice_shop"} {
		if c, err := ParseCommand(s); err != nil || c.Kind != ChecksumDatabase || c.Database != "alice_shop" {
			t.Errorf("%q: %+v %v", s, c, err)
		}
	}
	if c, err := ParseCommand("restore-tables mariadb alice_shop"); err != nil || c.Kind != RestoreTables || c.Engine != "mariadb" {
		t.Errorf("restore-tables: %+v %v", c, err)
	}
}

func TestParseCommandRefuses(t *testing.T) {
	for _, s := range []string{
		"", "sh", "bash -c id", "/usr/bin/rsync --server -lr --numeric-ids . .",
		"rsync", "rsync --server", "rsync --daemon --server -lr --numeric-ids . .",
		"rsync --server --sender -lHogDtpAXre.iLsfxCIvu --numeric-ids . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --rsync-path=sh . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids -e ssh . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . /etc",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . ../x",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . x",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids .. .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu . .",                             // no --numeric-ids
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --numeric-ids . .", // repeated
		"rsync --server -lHogDtpAXre.iLsfxCIvu -lr --numeric-ids . .",           // two clusters
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . .",               // -D: devices, specials
		"rsync --server -lHogDtpAXvre.iLsfxCIvu --numeric-ids . .",              // -v
		"rsync --server -lHogDtpAXzre.iLsfxCIvu --numeric-ids . .",              // -z
		"rsync --server -llr --numeric-ids . .",                                 // repeated letter
		"rsync --server -lHogDtpAX --numeric-ids . .",                           // no -r
		"rsync --server -lHogDtpAXre --numeric-ids . .",                         // empty caps
		"rsync --server -lHogDtpAXre.i.L --numeric-ids . .",                     // malformed caps
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --temp-dir=x . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --log-file=x . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --files-from=x . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --usermap=0:0 . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --link-dest=/ . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --remove-source-files . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . . ; sh",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . .\nsh",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . . $(id)",
		"rsync  --server -lr --numeric-ids . .", " rsync --server -lr --numeric-ids . .",
		"rsync --server -lr --numeric-ids . . ",
		"rsync --server -lr --numeric-ids . \\.",
		"rsync --server -lr --numeric-ids '.' .",
		"restore-database", "restore-database mariadb", "restore-database mysql x",
		"restore-database mariadb a b", "restore-database mariadb ../x",
		"restore-database mariadb `id`", "restore-database mariadb " + strings.Repeat("a", 65),
		"checksum-database", "checksum-database mariadb", "checksum-database mariadb a b", "checksum-database mysql x",
		"checksum-database mariadb ../x", "restore-tables mariadb", "restore-tables mariadb a b",
		"restore-tables postgresql alice_shop", // PostgreSQL databases are restored whole
		"restore-tables mariadb a;b", "restore-table mariadb x",
		strings.Repeat("a", maxCommand+1),
	} {
		if c, err := ParseCommand(s); err == nil {
			t.Errorf("%q accepted: %+v", s, c)
		} else if !errors.Is(err, ErrCommand) {
			t.Errorf("%q: error %v is not ErrCommand", s, err)
		}
	}
}

func TestRsyncArgv(t *testing.T) {
	c, err := ParseCommand(goodRsync[0])
	if err != nil {
		t.Fatal(err)
	}
	got := c.rsyncArgv("/usr/bin/rsync", "/p/home/alice")
	want := []string{"/usr/bin/rsync", "--server", "-lHogtpAXre.iLsfxCIvu", "--delete", "--stats", "--partial", "--numeric-ids",
		".", "/p/home/alice/"}
	if !slices.Equal(got, want) {
		t.Errorf("argv %q\nwant %q", got, want)
	}
}

// FuzzParseCommand: whatever is accepted rebuilds an argv whose every
// word is on the lists, ending in the home; nothing accepted carries a
// byte outside the alphabet.
func FuzzParseCommand(f *testing.F) {
	for _, s := range goodRsync {
		f.Add(s)
	}
	f.Add("restore-database mariadb alice_shop")
	f.Add("checksum-database postgresql alice_shop")
	f.Add("restore-tables mariadb alice_shop")
	f.Add("rsync --server --sender -lr --numeric-ids . .")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCommand(s)
		if err != nil {
			if !errors.Is(err, ErrCommand) {
				t.Fatalf("%q: %v not ErrCommand", s, err)
			}
			return
		}
		switch c.Kind {
		case Rsync:
			argv := c.rsyncArgv("/usr/bin/rsync", "/h/u")
			if argv[len(argv)-1] != "/h/u/" || argv[len(argv)-2] != "." || argv[1] != "--server" {
				t.Fatalf("%q: argv %q", s, argv)
			}
			for _, a := range argv[3 : len(argv)-2] {
				if !rsyncLong[a] {
					t.Fatalf("%q: argv carries %q", s, a)
				}
			}
			if strings.Contains(c.Flags, "--") || !strings.HasPrefix(c.Flags, "-") {
				t.Fatalf("%q: flags %q", s, c.Flags)
			}
		case RestoreDatabase, ChecksumDatabase, RestoreTables:
			if c.Kind == RestoreTables && c.Engine != "mariadb" {
				t.Fatalf("%q: restore-tables of %s", s, c.Engine)
			}
			if strings.ContainsAny(c.Database, " /\\`$;'\"") || c.Database == "" {
				t.Fatalf("%q: database %q", s, c.Database)
			}
		default:
			t.Fatalf("%q: kind %d", s, c.Kind)
		}
	})
}

// Files vanishing during a pass are normal while the site is live, a
// failure on the final pass (the account is suspended: something still
// writes).
func TestVanishedOnly(t *testing.T) {
	for _, c := range []struct {
		status uint32
		final  bool
		ok     bool
	}{{24, false, true}, {24, true, false}, {23, false, false}, {23, true, false}, {1, false, false}} {
		if got := vanishedOnly(c.status, c.final); got != c.ok {
			t.Errorf("status %d final %v: %v, want %v", c.status, c.final, got, c.ok)
		}
	}
}
