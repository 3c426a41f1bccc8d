package account

import (
	"path/filepath"
	"strconv"

	"github.com/npanel/npanel/nodeagent/platform"
)

// Every command the account actions run is built here, as an argument
// vector for a fixed binary of the profile. The username has passed
// validate.Username, so it cannot start with '-' and be taken for an option;
// it is still placed after every option, as the tools document.

// useraddArgv creates the user without a home directory (-M): the action
// creates the home itself through os.Root, so that its mode, owner and
// skeleton are the same on every distro whatever /etc/skel, HOME_MODE or
// CREATE_HOME say, and so that an ensure interrupted between the two steps
// finishes the home on its next run. -p '*' gives the account "no password"
// explicitly: distros differ ('!' on Debian, '!!' on Alma) and a bare '!'
// cannot be told from a lock, nor unlocked by usermod -U.
func useraddArgv(p *platform.Profile, user string) []string {
	return []string{p.Useradd,
		"-M",
		"-d", filepath.Join(p.HomeBase, user),
		"-s", p.Nologin,
		"-U",
		"-c", GECOSMarker,
		"-p", "*",
		user,
	}
}

// lockArgv suspends the account. -L alone only disables the password, which
// key-based SSH logins and su from root never consult; -e 1 expires the
// account (on 1970-01-02), which PAM's account stage and sshd refuse for
// every kind of login.
func lockArgv(p *platform.Profile, user string) []string {
	return []string{p.Usermod, "-L", "-e", "1", user}
}

// unlockArgv undoes lockArgv; -e "" clears the expiry.
func unlockArgv(p *platform.Profile, user string) []string {
	return []string{p.Usermod, "-U", "-e", "", user}
}

// userdelArgv removes the user and its private group. Not -r: the home is
// archived and removed by the action, which checks its path first, and -r
// would also delete whatever the passwd entry's home field points at.
func userdelArgv(p *platform.Profile, user string) []string {
	return []string{p.Userdel, user}
}

// setquotaArgv sets the user's block limits on the filesystem mounted at
// mountpoint; soft = hard so that the limit is a limit, with no grace
// period, and inode limits stay off (0). quotaMB 0 removes the limits.
func setquotaArgv(p *platform.Profile, user string, quotaMB uint64, mountpoint string) []string {
	blocks := strconv.FormatUint(quotaMB*1024, 10) // setquota counts 1 KiB blocks
	return []string{p.Setquota, "-u", user, blocks, blocks, "0", "0", mountpoint}
}
