// Package store owns every key the control plane keeps in etcd. Nothing else
// in nPanel builds an etcd key: callers speak in records (Node, Task, User,
// AuditEvent) and the store turns them into keys, values and transactions.
//
// Callers follow records by Kind (List, Watch, Follow: watch.go), each
// event already named by the object's name; they never see a key.
//
// Layout (all under /npanel/):
//
//	cluster/ca                 CA key material (ca.Material), created once
//	cluster/secrets            token signing and gossip keys, created once
//	cluster/nameservers        the cluster's nameserver names (zones' NS records)
//	nodes/<name>               operator's node spec (address, roles, labels)        KindNodes
//	nodestate/<name>           agent-reported facts, accepted certs, status           KindNodeState(name)
//	alive/<name>               bound to the node's liveness lease (value: replica)
//	services/<name>            the daemons the node's agent manages, as it last reported them
//	tasks/<id>                 task record: spec, status, result
//	queue/<node>/<id>          tasks not yet acknowledged, in id (time) order          KindNodeQueue(node)
//	jointokens/<jti>           used join tokens (single use across replicas)
//	users/<name>               users (admin, reseller, account owner) and password hashes
//	apitokens/<id>             API tokens (hashed secrets) for automation
//	plans/<name>               hosting plans
//	resellers/<name>           resellers and their limits
//	usage/<owner>              accounts and disk an owner's accounts consume
//	accounts/<id>              hosting accounts: spec and lifecycle status            KindAccounts
//	names/user/<username>      uniqueness of account user names (→ account id)
//	names/domain/<domain>      uniqueness of domains cluster-wide (→ account id)
//	names/tree/<tld>/<..>/     every hosted name by reversed labels (→ account id, or -cluster), see nametree.go
//	alloc/<node>               what is placed on a node (scheduler's ledger)
//	zones/<name>               DNS zones: records, primary node, secondaries, status   KindZones
//	databases/<account>/<db>   an account's databases: desired spec with its generation
//	dbusers/<account>/<user>   an account's database users, grants, password sealed to the node's key
//	dbstate/<account>/db/<db>  observed status of a database (controller), .../user/<user> of a user
//	dbseq/<account>            bumped by every change to the three above (one CAS per account) KindDatabaseChanges
//	dbstatus/<account>         the account's databases as its node last reported them
//	mail/<account>/box/<address>  an account's mailboxes: spec, password sealed to the node's key
//	mail/<account>/domain/<domain> an account's mail domains: forwarders, catch-all, spam, DKIM selectors, webmail
//	mailstate/<account>/box/<address> observed status of a mailbox (controller), .../domain/<domain> of a domain
//	mailseq/<account>          bumped by every change to the two above (one CAS per account) KindMailChanges
//	certificates/<site>        a site's TLS certificate: spec and status (public chain only) KindCertificates
//	done/account/<id>/<task>   a finished account task for the controller (→ task id) KindAccountOutcomes
//	done/zone/<zone>/<task>    a finished zone task                                   KindZoneOutcomes
//	done/dnsnode/<node>/<task> a finished check of a node's primary zones             KindDNSChecks
//	done/database/<account>/<task> a finished database task                           KindDatabaseOutcomes
//	done/mail/<account>/<task> a finished mail task                                  KindMailOutcomes
//	done/certificate/<site>/<task> a finished certificate task                       KindCertificateOutcomes
//	audit/<id>                 audit events, in id (time) order
//	replicas/<id>              live server replicas, bound to their session (Session)
//	election/                  leader election (etcd concurrency; Session.Campaign, LeaderID)
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const prefix = "/npanel/"

// Key prefixes; the layout is in the package doc.
const (
	keyCA           = prefix + "cluster/ca"
	keySecrets      = prefix + "cluster/secrets"
	prefixNodes     = prefix + "nodes/"
	prefixState     = prefix + "nodestate/"
	prefixAlive     = prefix + "alive/"
	prefixTasks     = prefix + "tasks/"
	prefixQueue     = prefix + "queue/"
	prefixTokens    = prefix + "jointokens/"
	prefixUsers     = prefix + "users/"
	prefixTokensAPI = prefix + "apitokens/"
	prefixPlans     = prefix + "plans/"
	prefixResellers = prefix + "resellers/"
	prefixUsage     = prefix + "usage/"
	prefixAccounts  = prefix + "accounts/"
	prefixNames     = prefix + "names/"
	prefixAlloc     = prefix + "alloc/"
	prefixDone      = prefix + "done/"
	prefixAudit     = prefix + "audit/"
	prefixReplicas  = prefix + "replicas/"
	prefixElection  = prefix + "election/"
	prefixServices  = prefix + "services/"
)

var (
	// ErrNotFound means the record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a compare in a transaction failed: the record exists
	// already, or changed since it was read.
	ErrConflict = errors.New("conflict")
)

// ErrNotYet is a conflict that passes on its own: an account not placed
// on a node yet, a change still being applied. Callers are answered
// CONFLICT alike (errors.Is(ErrNotYet, ErrConflict)); one that can wait,
// such as the cPanel import, tries again instead of giving up.
var ErrNotYet error = notYet{}

type notYet struct{}

func (notYet) Error() string        { return ErrConflict.Error() }
func (notYet) Is(target error) bool { return target == ErrConflict }

// Store is the typed view of the cluster state in etcd. It is safe for
// concurrent use.
type Store struct {
	cli *clientv3.Client
	// ownerLocks serialises quota-checked creations per owner (see
	// CreateAccount); owner name → *sync.Mutex.
	ownerLocks sync.Map
	// users, plans and services answer CachedUser, CachedPlan and
	// CachedServices once RunMirrors runs.
	users    *mirror[User]
	plans    *mirror[Plan]
	services *mirror[NodeServices]
	nodes    *mirror[Node]
	zones    zoneCache
	// taskWaits signals WaitTask callers (see taskHub).
	taskWaits *taskHub
	// dbWaits signals WaitDatabaseObject callers.
	dbWaits *taskHub
	// follows: the shared list-and-watch loops of Follow.
	follows followHub
	// txnOps and txnBytes bound one transaction (SetTxnLimits); 0: etcd's
	// defaults.
	txnOps, txnBytes int
}

// New wraps an etcd client. The caller owns the client.
func New(cli *clientv3.Client) *Store {
	s := &Store{cli: cli, taskWaits: newTaskHub(cli), dbWaits: newStatusHub(cli)}
	s.users = newMirror[User](s, kindUsers)
	s.plans = newMirror[Plan](s, kindPlans)
	s.services = newMirror[NodeServices](s, kindServices)
	s.nodes = newMirror[Node](s, KindNodes)
	return s
}

// RunMirrors keeps users, plans, service reports and node specs in memory
// for CachedUser, CachedPlan, CachedServices and CachedNode, and runs the
// one watch on task records that WaitTask listens to and the one on
// database statuses that WaitDatabaseObject listens to, until ctx ends.
func (s *Store) RunMirrors(ctx context.Context, log *slog.Logger) {
	go s.users.run(ctx, log)
	go s.plans.run(ctx, log)
	go s.services.run(ctx, log)
	go s.nodes.run(ctx, log)
	go s.taskWaits.run(ctx, log)
	go s.dbWaits.run(ctx, log)
}

// Ping proves etcd answers: a linearizable read of one key.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.cli.Get(ctx, keySecrets, clientv3.WithCountOnly())
	return err
}

func getJSON[T any](ctx context.Context, cli *clientv3.Client, key string, opts ...clientv3.OpOption) (*T, int64, error) {
	resp, err := cli.Get(ctx, key, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, ErrNotFound
	}
	v, err := decodeJSON[T](resp.Kvs[0].Key, resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return v, resp.Kvs[0].ModRevision, nil
}

func listJSON[T any](ctx context.Context, cli *clientv3.Client, pfx string, opts ...clientv3.OpOption) ([]T, int64, error) {
	resp, err := cli.Get(ctx, pfx, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", pfx, err)
	}
	out := make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := decodeJSON[T](kv.Key, kv.Value)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, *v)
	}
	return out, resp.Header.Revision, nil
}

func decodeJSON[T any](key, value []byte) (*T, error) {
	var v T
	if err := json.Unmarshal(value, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return &v, nil
}

// pageJSON reads at most limit JSON records under prefix whose names sort
// after after (all with limit 0), in key order; more says whether any
// follow.
func pageJSON[T any](ctx context.Context, cli *clientv3.Client, prefix, after string, limit int) (out []T, more bool, err error) {
	from := prefix
	if after != "" {
		from = prefix + after + "\x00"
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := cli.Get(ctx, from, opts...)
	if err != nil {
		return nil, false, fmt.Errorf("list %s: %w", prefix, err)
	}
	out = make([]T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := decodeJSON[T](kv.Key, kv.Value)
		if err != nil {
			return nil, false, err
		}
		out = append(out, *v)
	}
	return out, resp.More, nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own record types are marshalled; failing here is a bug.
		panic(fmt.Sprintf("store: marshal %T: %v", v, err))
	}
	return string(b)
}

// absent compares that key does not exist.
func absent(key string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
}

// present compares that key exists.
func present(key string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
}

// unchanged compares that key was not modified since it was read at rev.
func unchanged(key string, rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev)
}

func lastSegment(key string) string {
	return key[strings.LastIndexByte(key, '/')+1:]
}
