package controlplane

import (
	"context"

	"github.com/npanel/npanel/protos/agentpb"
)

// PublishChallengeForTest calls the gateway's PublishChallenge as node
// would over its mTLS stream (the identity the authenticator derives
// from the peer certificate).
func (s *Server) PublishChallengeForTest(ctx context.Context, node string, req *agentpb.PublishChallengeRequest) error {
	_, err := s.gateway.PublishChallenge(context.WithValue(ctx, nodeCtxKey{}, nodeIdentity{name: node}), req)
	return err
}
