package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
)

// Replica is one control plane replica.
type Replica struct {
	ID           string  `json:"id"`
	APIAddress   string  `json:"apiAddress"`
	AgentAddress string  `json:"agentAddress"`
	Leader       bool    `json:"leader"`
	Version      *string `json:"version"`
}

// EtcdMember is one etcd member and its health.
type EtcdMember struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	PeerURLs    []string `json:"peerURLs"`
	ClientURLs  []string `json:"clientURLs"`
	Learner     bool     `json:"learner"`
	Healthy     bool     `json:"healthy"`
	Leader      bool     `json:"leader"`
	DBSizeBytes *int64   `json:"dbSizeBytes"`
	Version     *string  `json:"version"`
	Error       *string  `json:"error"`
}

// ClusterStatus is the control plane: replicas, leader and etcd.
type ClusterStatus struct {
	Replicas []Replica `json:"replicas"`
	Leader   *string   `json:"leader"`
	Etcd     struct {
		Embedded bool         `json:"embedded"`
		Members  []EtcdMember `json:"members"`
	} `json:"etcd"`
}

// ClusterStatus returns the replicas, the leader and the etcd members (admin).
func (c *Client) ClusterStatus(ctx context.Context) (*ClusterStatus, error) {
	var out struct {
		Cluster ClusterStatus `json:"cluster"`
	}
	err := c.Do(ctx, `{cluster{replicas{id apiAddress agentAddress leader version} leader
		etcd{embedded members{id name peerURLs clientURLs learner healthy leader dbSizeBytes version error}}}}`, nil, &out)
	if err != nil {
		return nil, err
	}
	return &out.Cluster, nil
}

// SnapshotPath is the server's snapshot endpoint.
const SnapshotPath = "/v1/cluster/snapshot"

// ErrSnapshotCorrupt is a snapshot whose trailing SHA-256 does not match
// its content: cut short or damaged on the way.
var ErrSnapshotCorrupt = errors.New("snapshot does not match its own checksum")

// ClusterSnapshot downloads a snapshot of the control plane's etcd into w
// (admin) and checks it against the SHA-256 etcd appends to it. It returns
// the bytes written and the SHA-256 of all of them (the file's).
func (c *Client) ClusterSnapshot(ctx context.Context, w io.Writer) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.url, "/graphql")+SnapshotPath, nil)
	if err != nil {
		return 0, "", err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// The ws client has no overall timeout: a large snapshot over a slow
	// link may take longer than any API call should.
	resp, err := c.ws.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", httpError(resp)
	}
	file := sha256.New()
	content := &holdBack{h: sha256.New()}
	n, err := io.Copy(io.MultiWriter(w, file, content), resp.Body)
	if err != nil {
		return n, "", fmt.Errorf("snapshot download cut short after %d bytes: %w", n, err)
	}
	if len(content.tail) != sha256.Size || !bytes.Equal(content.h.Sum(nil), content.tail) {
		return n, "", ErrSnapshotCorrupt
	}
	return n, hex.EncodeToString(file.Sum(nil)), nil
}

// holdBack hashes everything written to it but the last sha256.Size
// bytes, which it keeps in tail.
type holdBack struct {
	h    hash.Hash
	tail []byte
}

func (hb *holdBack) Write(p []byte) (int, error) {
	buf := append(hb.tail, p...)
	if cut := len(buf) - sha256.Size; cut > 0 {
		hb.h.Write(buf[:cut])
		buf = buf[cut:]
	}
	hb.tail = append([]byte(nil), buf...)
	return len(p), nil
}

// httpError turns an error answer of a non-GraphQL endpoint into Errors
// when it carries the API's error body, else into a plain error.
func httpError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var r gqlResponse
	if json.Unmarshal(raw, &r) == nil && len(r.Errors) > 0 {
		es := make(Errors, 0, len(r.Errors))
		for _, e := range r.Errors {
			code, _ := e.Extensions["code"].(string)
			es = append(es, &Error{Code: code, Message: e.Message})
		}
		return es
	}
	return fmt.Errorf("server answered %s: %s", resp.Status, strings.TrimSpace(string(raw)))
}
