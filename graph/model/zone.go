package model

import "time"

// Zone is bound by hand (see gqlgen.yml) so that its account is resolved
// lazily, only when asked for.
type Zone struct {
	Name      string       `json:"name"`
	Node      *string      `json:"node,omitempty"`
	Status    ZoneStatus   `json:"status"`
	Reason    *string      `json:"reason,omitempty"`
	Serial    *int64       `json:"serial,omitempty"`
	Reverse   bool         `json:"reverse"`
	Dnssec    bool         `json:"dnssec"`
	Ds        []string     `json:"ds"`
	Rollover  *string      `json:"rollover,omitempty"`
	Records   []*DNSRecord `json:"records"`
	CreatedAt time.Time    `json:"createdAt"`
	UpdatedAt time.Time    `json:"updatedAt"`

	AccountID string `json:"-"`
}
