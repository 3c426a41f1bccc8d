package client

import (
	"context"
	"time"
)

// LogQuery narrows a log read: Lines 0 takes the server's default, a zero
// Since and an empty Grep none.
type LogQuery struct {
	Lines int
	Since time.Time
	Grep  string
}

func (q LogQuery) vars(v map[string]any) map[string]any {
	v["n"], v["s"], v["g"] = nil, nil, nil
	if q.Lines != 0 {
		v["n"] = q.Lines
	}
	if !q.Since.IsZero() {
		v["s"] = q.Since.UTC().Format(time.RFC3339Nano)
	}
	if q.Grep != "" {
		v["g"] = q.Grep
	}
	return v
}

// DomainLogs returns the last lines of a domain's access or error log
// (kind ACCESS or ERROR), narrowed by q.
func (c *Client) DomainLogs(ctx context.Context, domain, kind string, q LogQuery) ([]string, error) {
	var out struct{ DomainLogs []string }
	err := c.Do(ctx, `query($d:String!,$k:LogKind!,$n:Int,$s:Time,$g:String){domainLogs(domain:$d,kind:$k,lines:$n,since:$s,grep:$g)}`,
		q.vars(map[string]any{"d": domain, "k": kind}), &out)
	return out.DomainLogs, err
}

// ServiceLogs returns the last lines of a daemon's log on a node (admins).
func (c *Client) ServiceLogs(ctx context.Context, node, service string, q LogQuery) ([]string, error) {
	var out struct{ ServiceLogs []string }
	err := c.Do(ctx, `query($node:String!,$svc:String!,$n:Int,$s:Time,$g:String){serviceLogs(node:$node,service:$svc,lines:$n,since:$s,grep:$g)}`,
		q.vars(map[string]any{"node": node, "svc": service}), &out)
	return out.ServiceLogs, err
}

// TrafficPoint is one bucket of traffic.
type TrafficPoint struct {
	Start    time.Time `json:"start"`
	Requests int64     `json:"requests"`
	Bytes    int64     `json:"bytes"`
}

// Bandwidth is an account's traffic over a period.
type Bandwidth struct {
	Account  string         `json:"account"`
	Period   string         `json:"period"`
	Bytes    int64          `json:"bytes"`
	Requests int64          `json:"requests"`
	Series   []TrafficPoint `json:"series"`
}

// RequestStats is a domain's requests over a period.
type RequestStats struct {
	Domain   string `json:"domain"`
	Period   string `json:"period"`
	Requests int64  `json:"requests"`
	Bytes    int64  `json:"bytes"`
	Status   struct {
		S1xx int64 `json:"s1xx"`
		S2xx int64 `json:"s2xx"`
		S3xx int64 `json:"s3xx"`
		S4xx int64 `json:"s4xx"`
		S5xx int64 `json:"s5xx"`
	} `json:"status"`
	MeanSeconds float64        `json:"meanSeconds"`
	Series      []TrafficPoint `json:"series"`
}

const seriesFields = `series{start requests bytes}`

// Bandwidth reads an account's traffic; period is HOUR, DAY, WEEK or MONTH.
func (c *Client) Bandwidth(ctx context.Context, account, period string) (*Bandwidth, error) {
	var out struct{ Bandwidth Bandwidth }
	err := c.Do(ctx, `query($a:String!,$p:TrafficPeriod!){bandwidth(account:$a,period:$p){account period bytes requests `+seriesFields+`}}`,
		map[string]any{"a": account, "p": period}, &out)
	return &out.Bandwidth, err
}

// Requests reads a domain's requests; period is HOUR, DAY, WEEK or MONTH.
func (c *Client) Requests(ctx context.Context, domain, period string) (*RequestStats, error) {
	var out struct{ Requests RequestStats }
	err := c.Do(ctx, `query($d:String!,$p:TrafficPeriod!){requests(domain:$d,period:$p){domain period requests bytes status{s1xx s2xx s3xx s4xx s5xx} meanSeconds `+seriesFields+`}}`,
		map[string]any{"d": domain, "p": period}, &out)
	return &out.Requests, err
}

// FilesystemUsage is one mounted filesystem of a node.
type FilesystemUsage struct {
	Mountpoint string `json:"mountpoint"`
	Device     string `json:"device"`
	Fstype     string `json:"fstype"`
	SizeBytes  int64  `json:"sizeBytes"`
	AvailBytes int64  `json:"availBytes"`
	Files      int64  `json:"files"`
	FilesFree  int64  `json:"filesFree"`
}

// ServiceSummary is a daemon in a node's summary.
type ServiceSummary struct {
	Name     string  `json:"name"`
	State    string  `json:"state"`
	Version  *string `json:"version"`
	Restarts int     `json:"restarts"`
	Up       bool    `json:"up"`
}

// NodeMetrics is a node's host figures and daemons.
type NodeMetrics struct {
	Node                 string            `json:"node"`
	CPUBusy              float64           `json:"cpuBusy"`
	CPUs                 int               `json:"cpus"`
	Load1                float64           `json:"load1"`
	Load5                float64           `json:"load5"`
	Load15               float64           `json:"load15"`
	MemoryTotalBytes     int64             `json:"memoryTotalBytes"`
	MemoryAvailableBytes int64             `json:"memoryAvailableBytes"`
	UptimeSeconds        int64             `json:"uptimeSeconds"`
	Filesystems          []FilesystemUsage `json:"filesystems"`
	Services             []ServiceSummary  `json:"services"`
}

// NodeMetrics reads a node's summary (admins).
func (c *Client) NodeMetrics(ctx context.Context, node string) (*NodeMetrics, error) {
	var out struct{ NodeMetrics NodeMetrics }
	err := c.Do(ctx, `query($n:String!){nodeMetrics(node:$n){node cpuBusy cpus load1 load5 load15 memoryTotalBytes memoryAvailableBytes uptimeSeconds
		filesystems{mountpoint device fstype sizeBytes availBytes files filesFree} services{name state version restarts up}}}`,
		map[string]any{"n": node}, &out)
	return &out.NodeMetrics, err
}

// ServiceStatus is one daemon of a node as last reported.
type ServiceStatus struct {
	Node       string     `json:"node"`
	Service    Service    `json:"service"`
	Up         bool       `json:"up"`
	ReportedAt *time.Time `json:"reportedAt"`
}

// ServiceStatus reads one daemon of a node (admins).
func (c *Client) ServiceStatus(ctx context.Context, node, service string) (*ServiceStatus, error) {
	var out struct{ ServiceStatus *ServiceStatus }
	err := c.Do(ctx, `query($n:String!,$s:String!){serviceStatus(node:$n,service:$s){node up reportedAt service{name state version listen since error restarts}}}`,
		map[string]any{"n": node, "s": service}, &out)
	return out.ServiceStatus, err
}

// ScrapeToken is a token for Prometheus and Alertmanager.
type ScrapeToken struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Scopes: DISCOVERY, METRICS, ALERTS.
	Scopes    []string  `json:"scopes"`
	CreatedAt time.Time `json:"createdAt"`
}

// CreateScrapeToken makes a scrape token that opens scopes (DISCOVERY,
// METRICS, ALERTS; none given: all three) and returns its secret, shown
// this once.
func (c *Client) CreateScrapeToken(ctx context.Context, name string, scopes ...string) (string, *ScrapeToken, error) {
	var out struct {
		CreateScrapeToken struct {
			Token       string
			ScrapeToken ScrapeToken
		}
	}
	vars := map[string]any{"n": name}
	if scopes != nil {
		vars["s"] = scopes
	}
	err := c.Do(ctx, `mutation($n:String!,$s:[ScrapeScope!]){createScrapeToken(name:$n,scopes:$s){token scrapeToken{id name scopes createdAt}}}`, vars, &out)
	return out.CreateScrapeToken.Token, &out.CreateScrapeToken.ScrapeToken, err
}

// ScrapeTokens lists the scrape tokens.
func (c *Client) ScrapeTokens(ctx context.Context) ([]ScrapeToken, error) {
	var out struct{ ScrapeTokens []ScrapeToken }
	err := c.Do(ctx, `{scrapeTokens{id name scopes createdAt}}`, nil, &out)
	return out.ScrapeTokens, err
}

// DeleteScrapeToken deletes a scrape token.
func (c *Client) DeleteScrapeToken(ctx context.Context, id string) error {
	return c.Do(ctx, `mutation($i:ID!){deleteScrapeToken(id:$i)}`, map[string]any{"i": id}, nil)
}
