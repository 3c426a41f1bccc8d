package graph

import (
	"context"
	"sort"
	"time"

	"github.com/npanel/npanel/graph/model"
)

// etcdStatusTimeout bounds each member's status request: a member down or
// cut off answers nothing, and the query must still answer for the others.
const etcdStatusTimeout = 3 * time.Second

// replicas lists the registered replicas in id order with the leader's id
// ("" while none is elected).
func (r *Resolver) replicas(ctx context.Context) ([]*model.Replica, string, error) {
	reps, err := r.Store.Replicas(ctx)
	if err != nil {
		return nil, "", err
	}
	leader, err := r.Cluster.LeaderID(ctx)
	if err != nil {
		return nil, "", err
	}
	out := make([]*model.Replica, 0, len(reps))
	for _, rep := range reps {
		m := &model.Replica{ID: rep.ID, APIAddress: rep.APIAddr, AgentAddress: rep.AgentAddr, Leader: rep.ID == leader}
		if rep.Version != "" {
			m.Version = &rep.Version
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, leader, nil
}

func (r *Resolver) etcdStatus(ctx context.Context) (*model.EtcdStatus, error) {
	members, err := r.Store.EtcdMembers(ctx, etcdStatusTimeout)
	if err != nil {
		return nil, err
	}
	out := &model.EtcdStatus{Embedded: r.Cluster.EmbeddedEtcd(), Members: make([]*model.EtcdMember, 0, len(members))}
	for _, m := range members {
		em := &model.EtcdMember{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs,
			Learner: m.Learner, Healthy: m.Healthy, Leader: m.Leader}
		if m.PeerURLs == nil {
			em.PeerURLs = []string{}
		}
		if m.ClientURLs == nil {
			em.ClientURLs = []string{}
		}
		if m.Version != "" {
			em.DbSizeBytes, em.Version = &m.DBSizeBytes, &m.Version
		}
		if m.Error != "" {
			em.Error = &m.Error
		}
		out.Members = append(out.Members, em)
	}
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].Name < out.Members[j].Name })
	return out, nil
}
