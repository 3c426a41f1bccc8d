package model

import (
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// Account is bound by hand (see gqlgen.yml) so that node, plan and owner are
// resolved lazily, through the request's loader cache, and only when asked.
type Account struct {
	ID        string          `json:"id"`
	Username  string          `json:"username"`
	Domain    string          `json:"domain"`
	Status    AccountStatus   `json:"status"`
	Reason    *string         `json:"reason,omitempty"`
	Suspended bool            `json:"suspended"`
	Events    []*AccountEvent `json:"events"`
	CreatedAt time.Time       `json:"createdAt"`
	UpdatedAt time.Time       `json:"updatedAt"`

	// ReasonDetail is what Reason says to admins (see store.Account).
	ReasonDetail string `json:"-"`
	NodeName     string `json:"-"`
	PlanName     string `json:"-"`
	OwnerName    string `json:"-"`
	// Sites and the generations decide the domains field without a read.
	Sites             []store.Site `json:"-"`
	Generation        int64        `json:"-"`
	AppliedGeneration int64        `json:"-"`
}
