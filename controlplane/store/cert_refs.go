package store

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MailDomainNames returns the account's mail domains that are not being
// deleted: the certificate controller adds mail. and webmail. names to the
// certificates of those sites. Only the domain records are read, never
// the mailboxes.
func (s *Store) MailDomainNames(ctx context.Context, account string) (map[string]bool, error) {
	p := mailPrefix(account) + "domain/"
	resp, err := s.cli.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("mail domains of %s: %w", account, err)
	}
	out := map[string]bool{}
	for _, kv := range resp.Kvs {
		d, err := decodeJSON[MailDomain](kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		if !d.Deleted {
			out[strings.TrimPrefix(string(kv.Key), p)] = true
		}
	}
	return out, nil
}
