package backupnode

import (
	"bytes"
	"crypto/rsa"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// Bounds of an EnsureBackupAccess request: one key per source node.
const (
	MaxKeys = 10000
	// maxKeyLen fits an RSA-16384 key in base64 with room to spare.
	maxKeyLen = 4096
	// minRSABits: below 3072 bits RSA falls short of the 128-bit level
	// the other key types give.
	minRSABits = 3072
)

// ValidateKey checks one source node's public key and returns the key, as
// the control plane sends it: one authorized_keys line of a plain
// ed25519, ECDSA or RSA (3072 bits or more) key, optionally with a
// comment, without options (the agent sets those).
func ValidateKey(line string) (ssh.PublicKey, error) {
	if line == "" {
		return nil, fmt.Errorf("public key is empty")
	}
	if len(line) > maxKeyLen {
		return nil, fmt.Errorf("public key is %d bytes long, the most is %d", len(line), maxKeyLen)
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < 0x20 || c == 0x7f {
			return nil, fmt.Errorf("public key contains control character %#x at offset %d", c, i)
		}
	}
	pub, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	if len(opts) > 0 {
		return nil, fmt.Errorf("public key carries authorized_keys options %q; send the bare key", opts)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("public key is followed by more than one key")
	}
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
	case ssh.KeyAlgoRSA:
		ck, ok := pub.(ssh.CryptoPublicKey)
		if !ok {
			return nil, fmt.Errorf("public key: RSA key without its parameters")
		}
		rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey)
		if !ok || rk.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("public key: RSA keys need at least %d bits", minRSABits)
		}
	default:
		return nil, fmt.Errorf("public key type %s is not accepted (ed25519, ecdsa or rsa of %d bits or more)", pub.Type(), minRSABits)
	}
	return pub, nil
}

// KeyLine is the authorized_keys line that lets node in with pub: no
// forwarding, no pty, no rc, and SFTP only, starting in the node's own
// directory of the chroot. node must be valid (pki.ValidNodeName), which
// keeps it free of quotes and spaces.
func KeyLine(node string, pub ssh.PublicKey) string {
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	return `restrict,command="internal-sftp -d /` + node + `" ` + key + " npanel-node:" + node
}

// validateAccess checks a whole EnsureBackupAccess request: valid and
// distinct node names, valid keys, no key given to two nodes (sshd takes
// the first matching line, so the second node would log in as the first).
func validateAccess(req *agentpb.EnsureBackupAccessAction) error {
	if req == nil {
		return invalid("ensure backup access: no request")
	}
	if len(req.GetKeys()) > MaxKeys {
		return invalid("ensure backup access: %d keys, the most is %d", len(req.GetKeys()), MaxKeys)
	}
	nodes := map[string]bool{}
	blobs := map[string]bool{}
	for i, k := range req.GetKeys() {
		if err := pki.ValidNodeName(k.GetNode()); err != nil {
			return invalid("ensure backup access: key %d: %w", i, err)
		}
		if nodes[k.GetNode()] {
			return invalid("ensure backup access: node %q is listed twice", k.GetNode())
		}
		nodes[k.GetNode()] = true
		pub, err := ValidateKey(k.GetPublicKey())
		if err != nil {
			return invalid("ensure backup access: node %q: %w", k.GetNode(), err)
		}
		b := string(pub.Marshal())
		if blobs[b] {
			return invalid("ensure backup access: node %q has the key of another node", k.GetNode())
		}
		blobs[b] = true
	}
	return nil
}

func invalid(format string, args ...any) error {
	return actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, format, args...)
}
