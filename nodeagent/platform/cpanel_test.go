package platform

import "testing"

func TestCpanelPaths(t *testing.T) {
	for _, c := range []struct {
		p                  *Profile
		area, spool, group string
	}{
		{Debian12(""), "/var/lib/npanel/import", "/var/spool/cron/crontabs", "crontab"},
		{Alma9(""), "/var/lib/npanel/import", "/var/spool/cron", ""},
		{Debian12("/tmp/p"), "/tmp/p/var/lib/npanel/import", "/tmp/p/var/spool/cron/crontabs", ""},
	} {
		got := c.p.Cpanel()
		if got.ImportDir != c.area || got.CronSpoolDir != c.spool || got.CronGroup != c.group {
			t.Errorf("%s %q: %+v", c.p.Name, c.p.Prefix, got)
		}
	}
}
