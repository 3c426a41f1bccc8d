package platform

import "path/filepath"

// CpanelPaths says where the cPanel import reads archives from and where
// it writes an imported account's cron jobs.
type CpanelPaths struct {
	// ImportDir is the node's import area: operators copy cPanel archives
	// here, and an import action's path is relative to it. Root's, 0700.
	ImportDir string
	// CronSpoolDir holds one crontab per user, named after the user, as
	// the distribution's cron daemon reads them (Debian's cron:
	// crontabs/USER owned by the user and group CronGroup, 0600;
	// cronie: USER, the user's, 0600).
	CronSpoolDir string
	// CronGroup owns the crontabs on Debian ("crontab"); empty on Alma,
	// where a crontab has the user's own group, and under a prefix, where
	// no cron daemon reads the spool and the host may have no such group.
	CronGroup string
}

// Cpanel returns the cPanel import paths of p.
func (p *Profile) Cpanel() CpanelPaths {
	under := func(s string) string { return filepath.Join("/", p.Prefix, s) }
	c := CpanelPaths{ImportDir: under("var/lib/npanel/import")}
	if p.Name == NameAlma9 {
		c.CronSpoolDir = under("var/spool/cron")
	} else {
		c.CronSpoolDir = under("var/spool/cron/crontabs")
		if p.Prefix == "" {
			c.CronGroup = "crontab"
		}
	}
	return c
}
