package mail

import (
	"path"
	"path/filepath"
	"strings"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// MailboxMaildir returns the Maildir of mailbox address relative to home
// (its account's home), for an import that fills it. The mailbox must
// exist on this node with its home inside home; the Maildir is created,
// 0700 and the account's, by EnsureMailbox.
func (m *Module) MailboxMaildir(env *actions.Env, home, address string) (string, error) {
	_, local, domain, err := validate.MailAddress(address)
	if err != nil {
		return "", err
	}
	u, ok, err := readUser(env.Profile.Mail().UsersDir, domain, local)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "mailbox %s does not exist on this node", address)
	}
	rel, ok := strings.CutPrefix(filepath.Clean(u.home), filepath.Clean(home)+"/")
	if !ok || rel != mailHomeRel(domain, local) {
		return "", actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "mailbox %s does not live in %s", address, home)
	}
	return path.Join(rel, "Maildir"), nil
}
