package graph

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// CodeHostKeyUnknown is scanCpanelServer's refusal to log in to a server
// whose host key the operator has not confirmed: the message names it.
const CodeHostKeyUnknown = "HOST_KEY_UNKNOWN"

const (
	cpanelScanWait     = 2 * time.Minute
	cpanelScanTTL      = cpanelScanWait + time.Minute
	maxServerPassword  = 1024
	maxServerKey       = 16 << 10
	cpanelFetchDirName = "fetched"
)

// cpanelServerIn is the old server's part of scan and fetch inputs.
type cpanelServerIn struct {
	node, host, user      string
	port                  *int
	password, privateKey  *string
	fingerprint           *string
	fingerprintIsRequired bool
}

// cpanelServer checks how the node is to reach the server and seals the
// credentials to the node: from here on they exist only sealed. Every
// refusal names the field and never the secret.
func (r *Resolver) cpanelServer(ctx context.Context, in cpanelServerIn) (*agentpb.CpanelServer, error) {
	host, err := validate.CpanelServerHost(in.host)
	if err != nil {
		return nil, err
	}
	port := 0
	if in.port != nil {
		port = *in.port
	}
	if err := validate.CpanelServerPort(port); err != nil {
		return nil, err
	}
	if err := validate.CpanelServerUser(in.user); err != nil {
		return nil, err
	}
	fp := ""
	if in.fingerprint != nil {
		fp = *in.fingerprint
	}
	if fp != "" || in.fingerprintIsRequired {
		if err := validate.HostKeyFingerprint(fp); err != nil {
			return nil, err
		}
	}
	pw, key := deref(in.password), deref(in.privateKey)
	switch {
	case pw == "" && key == "":
		return nil, &validate.Error{Field: "password", Reason: "a password or a privateKey is required"}
	case len(pw) > maxServerPassword:
		return nil, &validate.Error{Field: "password", Reason: fmt.Sprintf("longer than %d bytes", maxServerPassword)}
	case len(key) > maxServerKey:
		return nil, &validate.Error{Field: "privateKey", Reason: fmt.Sprintf("longer than %d bytes", maxServerKey)}
	}
	if key != "" {
		// Checked here so that a bad key is INVALID_INPUT now, not a
		// failed task later. The parser's error is not shown: it may
		// quote the key.
		if _, err := ssh.ParsePrivateKey([]byte(key)); err != nil {
			return nil, &validate.Error{Field: "privateKey", Reason: "not an unencrypted OpenSSH or PEM private key"}
		}
	}
	if err := r.cpanelNode(ctx, in.node); err != nil {
		return nil, err
	}
	st, _, err := r.Store.GetNodeState(ctx, in.node)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if st == nil || len(st.PublicKey) == 0 {
		return nil, errorf(CodeConflict, "node "+in.node+" has not connected yet, so credentials cannot be sealed to it; try again when it is READY")
	}
	out := &agentpb.CpanelServer{Host: host, Port: uint32(port), User: in.user, HostKeyFingerprint: fp}
	if pw != "" {
		if out.SealedPassword, err = pki.SealDER(st.PublicKey, []byte(pw), agentpb.CpanelServerPasswordSealContext(in.user, host)); err != nil {
			return nil, err
		}
	}
	if key != "" {
		if out.SealedPrivateKey, err = pki.SealDER(st.PublicKey, []byte(key), agentpb.CpanelServerKeySealContext(in.user, host)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// serverTarget names a server in audit events: no secret.
func serverTarget(node, user, host string, port *int) string {
	p := 22
	if port != nil && *port != 0 {
		p = *port
	}
	return node + ":" + user + "@" + host + ":" + strconv.Itoa(p)
}

// nodeRefusal maps a node's refusal of a scan or fetch to the API's code.
func nodeRefusal(node string, err error) error {
	var te *store.TaskError
	if errors.As(err, &te) {
		switch te.Reason {
		case agentpb.ErrorReason_ERROR_REASON_INVALID:
			return &validate.Error{Field: "input", Reason: te.Message}
		case agentpb.ErrorReason_ERROR_REASON_CONFLICT:
			return errorf(CodeConflict, te.Message)
		case agentpb.ErrorReason_ERROR_REASON_NOT_FOUND:
			return errorf(CodeNotFound, te.Message)
		}
	}
	return errorf(CodeUnavailable, "node "+node+": "+err.Error())
}

// scanCpanel has the node list the server's accounts.
func (r *Resolver) scanCpanel(ctx context.Context, p auth.Principal, in model.ScanCpanelServerInput) (*agentpb.ScanCpanelServerResult, error) {
	srv, err := r.cpanelServer(ctx, cpanelServerIn{node: in.Node, host: in.Host, user: in.User, port: in.Port,
		password: in.Password, privateKey: in.PrivateKey, fingerprint: in.HostKeyFingerprint})
	if err != nil {
		return nil, err
	}
	spec := &agentpb.Task{Action: &agentpb.Task_ScanCpanelServer{ScanCpanelServer: &agentpb.ScanCpanelServerAction{Server: srv}}}
	t, err := r.Store.EnqueueQueryTask(ctx, in.Node, spec, "scanCpanelServer", p.Name, cpanelScanTTL)
	if err != nil {
		return nil, err
	}
	queued := t
	// The task holds the sealed credentials: it goes as soon as answered.
	defer func() { _ = r.Store.ForgetTask(context.WithoutCancel(ctx), queued) }()
	t, err = r.Store.WaitTask(ctx, t.ID, cpanelScanWait)
	if err != nil || t == nil || (t.Status != store.TaskSucceeded && t.Status != store.TaskFailed) {
		return nil, errorf(CodeUnavailable, "node "+in.Node+" did not answer within "+cpanelScanWait.String())
	}
	res, err := t.ScanCpanelServerResult()
	if err != nil {
		return nil, nodeRefusal(in.Node, err)
	}
	if res.GetHostKeyUnknown() {
		return nil, errorf(CodeHostKeyUnknown, "the host key of "+srv.GetHost()+" is "+res.GetHostKeyFingerprint()+
			"; confirm it on the server (ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub) and pass it as hostKeyFingerprint")
	}
	return res, nil
}

// fetchPath is where a fetch's archive lands in the import area: under
// the fetch's own directory, named as on the server (a .tar gets .tar.gz:
// the node gzips it on the way).
func fetchPath(id, account, remote string) (string, error) {
	base := "cpmove-" + account + ".tar.gz"
	if remote != "" {
		base = path.Base(remote)
		if strings.HasSuffix(base, ".tar") {
			base += ".gz"
		}
	}
	if strings.HasPrefix(base, ".") {
		return "", &validate.Error{Field: "remotePath", Reason: "must not name a hidden file"}
	}
	p := cpanelFetchDirName + "/" + strings.ToLower(id) + "/" + base
	if _, err := cpanelPath(p); err != nil {
		return "", &validate.Error{Field: "remotePath", Reason: "its file name cannot be kept in the import area"}
	}
	return p, nil
}

// fetchCpanel checks a fetch, seals its credentials and writes the record
// with its task; the fetch controller records the outcome.
func (r *Resolver) fetchCpanel(ctx context.Context, p auth.Principal, in model.FetchCpanelBackupInput) (*store.Fetch, error) {
	account, remote := deref(in.Account), deref(in.RemotePath)
	switch {
	case (account == "") == (remote == ""):
		return nil, &validate.Error{Field: "account", Reason: "give exactly one of account and remotePath"}
	case account != "":
		if err := validate.CpanelAccountName(account); err != nil {
			return nil, err
		}
	default:
		if err := validate.CpanelRemotePath(remote); err != nil {
			return nil, err
		}
	}
	now := time.Now().UTC()
	id := store.NewImportID(now)
	dst, err := fetchPath(id, account, remote)
	if err != nil {
		return nil, err
	}
	fp := in.HostKeyFingerprint
	srv, err := r.cpanelServer(ctx, cpanelServerIn{node: in.Node, host: in.Host, user: in.User, port: in.Port,
		password: in.Password, privateKey: in.PrivateKey, fingerprint: &fp, fingerprintIsRequired: true})
	if err != nil {
		return nil, err
	}
	f := &store.Fetch{ID: id, Node: in.Node, Host: srv.GetHost(), Port: int(srv.GetPort()), User: srv.GetUser(),
		HostKeyFingerprint: fp, Account: account, RemotePath: remote, Path: dst, CreatedBy: p.Name}
	if f.Port == 0 {
		f.Port = 22
	}
	spec := &agentpb.Task{Action: &agentpb.Task_FetchCpanelBackup{FetchCpanelBackup: &agentpb.FetchCpanelBackupAction{
		Server: srv, Account: account, RemotePath: remote, Path: dst}}}
	ev := store.NewAuditEvent(p.Name, source(ctx), "fetchCpanelBackup", serverTarget(in.Node, in.User, srv.GetHost(), in.Port), "ok")
	ev.Detail = map[string]string{"id": id, "account": account, "remotePath": remote, "path": dst, "hostKeyFingerprint": fp}
	if err := r.Store.CreateFetch(ctx, f, spec, ev); err != nil {
		return nil, err
	}
	return f, nil
}

func cpanelFetchModel(f *store.Fetch) *model.CpanelFetch {
	out := &model.CpanelFetch{ID: f.ID, Node: f.Node, Host: f.Host, Port: f.Port, User: f.User,
		HostKeyFingerprint: f.HostKeyFingerprint, Path: f.Path, Status: model.CpanelFetchStatus(f.Status),
		Bytes: int64(f.Bytes), CreatedBy: f.CreatedBy, StartedAt: f.CreatedAt}
	if f.Account != "" {
		out.Account = new(f.Account)
	}
	if f.RemotePath != "" {
		out.RemotePath = new(f.RemotePath)
	}
	if f.SHA256 != "" {
		out.Sha256 = new(f.SHA256)
	}
	if f.Error != "" {
		out.Error = new(f.Error)
	}
	if !f.FinishedAt.IsZero() {
		out.FinishedAt = new(f.FinishedAt)
	}
	return out
}
