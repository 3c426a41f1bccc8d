package client

import (
	"context"
	"time"
)

// Zone mirrors the GraphQL Zone type.
type Zone struct {
	Name      string      `json:"name"`
	Node      *string     `json:"node"`
	Status    string      `json:"status"`
	Reason    *string     `json:"reason"`
	Serial    *int64      `json:"serial"`
	Reverse   bool        `json:"reverse"`
	DNSSEC    bool        `json:"dnssec"`
	DS        []string    `json:"ds"`
	Rollover  *string     `json:"rollover"`
	Records   []DNSRecord `json:"records"`
	CreatedAt time.Time   `json:"createdAt"`
	UpdatedAt time.Time   `json:"updatedAt"`
}

// DNSRecord mirrors the GraphQL DNSRecord type.
type DNSRecord struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Type     string `json:"type"`
	Content  string `json:"content"`
	TTL      int    `json:"ttl"`
	Priority *int   `json:"priority"`
}

// RecordInput is a record to add or replace.
type RecordInput struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Content  string `json:"content"`
	TTL      *int   `json:"ttl,omitempty"`
	Priority *int   `json:"priority,omitempty"`
}

// ImportLine is one entry of an imported zone file.
type ImportLine struct {
	Line   int        `json:"line"`
	Text   string     `json:"text"`
	Record *DNSRecord `json:"record"`
	Reason *string    `json:"reason"`
}

// ZoneImport is what importZone reports.
type ZoneImport struct {
	Zone     Zone         `json:"zone"`
	Imported []ImportLine `json:"imported"`
	Refused  []ImportLine `json:"refused"`
	Skipped  []ImportLine `json:"skipped"`
}

const recordFields = `id name type content ttl priority`
const zoneFields = `name node status reason serial reverse dnssec ds rollover records{` + recordFields + `} createdAt updatedAt`

// Zone returns one zone, or nil.
func (c *Client) Zone(ctx context.Context, name string) (*Zone, error) {
	var out struct{ Zone *Zone }
	err := c.Do(ctx, `query($n:String!){zone(name:$n){`+zoneFields+`}}`, map[string]any{"n": name}, &out)
	return out.Zone, err
}

// Zones lists one page of zones and the cursor of the next ("" at the end).
func (c *Client) Zones(ctx context.Context, search string, first int, after string) ([]Zone, string, error) {
	vars := map[string]any{"f": map[string]any{}, "first": first, "after": nil}
	if search != "" {
		vars["f"] = map[string]any{"search": search}
	}
	if after != "" {
		vars["after"] = after
	}
	var out struct {
		Zones struct {
			Edges []struct {
				Node Zone `json:"node"`
			} `json:"edges"`
			PageInfo struct {
				HasNextPage bool    `json:"hasNextPage"`
				EndCursor   *string `json:"endCursor"`
			} `json:"pageInfo"`
		}
	}
	err := c.Do(ctx, `query($f:ZoneFilter,$first:Int,$after:String){zones(filter:$f,first:$first,after:$after){edges{node{`+zoneFields+`}} pageInfo{hasNextPage endCursor}}}`, vars, &out)
	if err != nil {
		return nil, "", err
	}
	zs := make([]Zone, 0, len(out.Zones.Edges))
	for _, e := range out.Zones.Edges {
		zs = append(zs, e.Node)
	}
	next := ""
	if out.Zones.PageInfo.HasNextPage && out.Zones.PageInfo.EndCursor != nil {
		next = *out.Zones.PageInfo.EndCursor
	}
	return zs, next, nil
}

// AddRecord adds a record to a zone.
func (c *Client) AddRecord(ctx context.Context, zone string, r RecordInput) (*DNSRecord, error) {
	var out struct{ AddRecord DNSRecord }
	err := c.Do(ctx, `mutation($z:String!,$r:RecordInput!){addRecord(zone:$z,record:$r){`+recordFields+`}}`, map[string]any{"z": zone, "r": r}, &out)
	return &out.AddRecord, err
}

// UpdateRecord replaces a record.
func (c *Client) UpdateRecord(ctx context.Context, zone, id string, r RecordInput) (*DNSRecord, error) {
	var out struct{ UpdateRecord DNSRecord }
	err := c.Do(ctx, `mutation($z:String!,$id:ID!,$r:RecordInput!){updateRecord(zone:$z,id:$id,record:$r){`+recordFields+`}}`, map[string]any{"z": zone, "id": id, "r": r}, &out)
	return &out.UpdateRecord, err
}

// DeleteRecord removes a record.
func (c *Client) DeleteRecord(ctx context.Context, zone, id string) error {
	return c.Do(ctx, `mutation($z:String!,$id:ID!){deleteRecord(zone:$z,id:$id)}`, map[string]any{"z": zone, "id": id}, nil)
}

// ImportZone imports a BIND zone file into a zone.
func (c *Client) ImportZone(ctx context.Context, zone, text string) (*ZoneImport, error) {
	var out struct{ ImportZone ZoneImport }
	err := c.Do(ctx, `mutation($z:String!,$t:String!){importZone(zone:$z,bindText:$t){zone{`+zoneFields+`} imported{line text reason record{`+recordFields+`}} refused{line text reason} skipped{line text reason}}}`,
		map[string]any{"z": zone, "t": text}, &out)
	return &out.ImportZone, err
}

// EnableDNSSEC signs a zone and returns its DS records.
func (c *Client) EnableDNSSEC(ctx context.Context, zone string, timeoutSeconds int) (*Zone, []string, error) {
	var out struct {
		EnableDNSSEC struct {
			Zone Zone     `json:"zone"`
			DS   []string `json:"ds"`
		} `json:"enableDNSSEC"`
	}
	err := c.Do(ctx, `mutation($z:String!,$t:Int){enableDNSSEC(zone:$z,timeoutSeconds:$t){zone{`+zoneFields+`} ds}}`, map[string]any{"z": zone, "t": timeoutSeconds}, &out)
	return &out.EnableDNSSEC.Zone, out.EnableDNSSEC.DS, err
}

// ZoneMutation runs disableDNSSEC or rotateDNSSECKeys on a zone.
func (c *Client) ZoneMutation(ctx context.Context, mutation, zone string) (*Zone, error) {
	var out map[string]Zone
	err := c.Do(ctx, `mutation($z:String!){`+mutation+`(zone:$z){`+zoneFields+`}}`, map[string]any{"z": zone}, &out)
	z := out[mutation]
	return &z, err
}

// ValidateZone checks a zone's records as a whole.
func (c *Client) ValidateZone(ctx context.Context, zone string) (bool, []string, error) {
	var out struct {
		ValidateZone struct {
			Valid  bool     `json:"valid"`
			Errors []string `json:"errors"`
		}
	}
	err := c.Do(ctx, `query($z:String!){validateZone(zone:$z){valid errors}}`, map[string]any{"z": zone}, &out)
	return out.ValidateZone.Valid, out.ValidateZone.Errors, err
}

// SetNameservers sets the cluster's nameservers.
func (c *Client) SetNameservers(ctx context.Context, names []string) ([]string, error) {
	var out struct{ SetNameservers []string }
	err := c.Do(ctx, `mutation($n:[String!]!){setNameservers(names:$n)}`, map[string]any{"n": names}, &out)
	return out.SetNameservers, err
}

// AddReverseZone creates the reverse zones of a network.
func (c *Client) AddReverseZone(ctx context.Context, cidr string) ([]Zone, error) {
	var out struct{ AddReverseZone []Zone }
	err := c.Do(ctx, `mutation($c:String!){addReverseZone(cidr:$c){`+zoneFields+`}}`, map[string]any{"c": cidr}, &out)
	return out.AddReverseZone, err
}

// DeleteZone stops serving an account domain's zone; the site stays.
func (c *Client) DeleteZone(ctx context.Context, name string) error {
	return c.Do(ctx, `mutation($n:String!){deleteZone(name:$n)}`, map[string]any{"n": name}, nil)
}

// DeleteReverseZone removes a reverse zone.
func (c *Client) DeleteReverseZone(ctx context.Context, name string) error {
	return c.Do(ctx, `mutation($n:String!){deleteReverseZone(name:$n)}`, map[string]any{"n": name}, nil)
}

// CreateZone serves an account domain's zone again after DeleteZone.
func (c *Client) CreateZone(ctx context.Context, name string) (*Zone, error) {
	var out struct{ CreateZone Zone }
	err := c.Do(ctx, `mutation($n:String!){createZone(name:$n){`+zoneFields+`}}`, map[string]any{"n": name}, &out)
	if err != nil {
		return nil, err
	}
	return &out.CreateZone, nil
}
