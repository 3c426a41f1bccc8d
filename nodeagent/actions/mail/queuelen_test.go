package mail_test

import (
	"testing"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestQueueLength counts a real Exim's queue, as the MailQueue action
// lists it.
func TestQueueLength(t *testing.T) {
	s := startStackWith(t, false)
	ctx := testenv.Context(t)
	if _, ok, err := mail.QueueLength(ctx, s.env); ok || err != nil {
		t.Fatalf("without the mail module in Env.Modules: ok %v, %v", ok, err)
	}
	env := *s.env
	env.Modules = []string{mail.ModuleName}
	n, ok, err := mail.QueueLength(ctx, &env)
	if err != nil || !ok {
		t.Fatalf("QueueLength: %v, ok %v", err, ok)
	}
	r := s.must(t, s.mod.NewMailQueue(&agentpb.MailQueueAction{Limit: 100})).(*agentpb.MailQueueResult)
	if n != int(r.Total) {
		t.Fatalf("exim -bpc says %d, exim -bp lists %d", n, r.Total)
	}
}
