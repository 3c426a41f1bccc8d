package client

import (
	"context"
	"time"
)

// CpanelItem is one line of a cPanel import's report.
type CpanelItem struct {
	Kind        string `json:"kind"`
	Name        string `json:"name"`
	Disposition string `json:"disposition"`
	Note        string `json:"note"`
	Entry       string `json:"entry"`
	Bytes       int64  `json:"bytes"`
}

// CpanelDomain is a domain of a cPanel archive.
type CpanelDomain struct {
	Domain  string  `json:"domain"`
	Kind    string  `json:"kind"`
	Docroot string  `json:"docroot"`
	AliasOf *string `json:"aliasOf"`
}

// CpanelMailbox is a mailbox of a cPanel archive (no password hash).
type CpanelMailbox struct {
	Address    string `json:"address"`
	QuotaBytes int64  `json:"quotaBytes"`
	Bytes      int64  `json:"bytes"`
	Messages   int64  `json:"messages"`
}

// CpanelDatabase is a database of a cPanel archive.
type CpanelDatabase struct {
	Name   string `json:"name"`
	Engine string `json:"engine"`
	Bytes  int64  `json:"bytes"`
}

// CpanelGrant is a database user's privileges on one database.
type CpanelGrant struct {
	Database   string   `json:"database"`
	Privileges []string `json:"privileges"`
}

// CpanelDatabaseUser is a database user of a cPanel archive (no hash).
type CpanelDatabaseUser struct {
	Name   string        `json:"name"`
	Engine string        `json:"engine"`
	Grants []CpanelGrant `json:"grants"`
}

// CpanelReport mirrors the GraphQL CpanelReport type.
type CpanelReport struct {
	Username        string               `json:"username"`
	Layout          string               `json:"layout"`
	MainDomain      string               `json:"mainDomain"`
	Plan            string               `json:"plan"`
	FidelityPercent int                  `json:"fidelityPercent"`
	ArchiveBytes    int64                `json:"archiveBytes"`
	HomeFiles       int64                `json:"homeFiles"`
	HomeBytes       int64                `json:"homeBytes"`
	Items           []CpanelItem         `json:"items"`
	Domains         []CpanelDomain       `json:"domains"`
	Mailboxes       []CpanelMailbox      `json:"mailboxes"`
	Databases       []CpanelDatabase     `json:"databases"`
	DatabaseUsers   []CpanelDatabaseUser `json:"databaseUsers"`
	Certificates    []struct {
		Domain string `json:"domain"`
	} `json:"certificates"`
	Crons []struct {
		Schedule string `json:"schedule"`
		Command  string `json:"command"`
	} `json:"crons"`
	Forwarders []struct {
		Source       string   `json:"source"`
		Destinations []string `json:"destinations"`
	} `json:"forwarders"`
	Autoresponders []struct {
		Address string `json:"address"`
		Subject string `json:"subject"`
	} `json:"autoresponders"`
	Zones []struct {
		Name string `json:"name"`
	} `json:"zones"`
}

// CpanelImport mirrors the GraphQL CpanelImport type.
type CpanelImport struct {
	ID         string        `json:"id"`
	Node       string        `json:"node"`
	Path       string        `json:"path"`
	Owner      string        `json:"owner"`
	Plan       string        `json:"plan"`
	Account    *string       `json:"account"`
	Username   *string       `json:"username"`
	Status     string        `json:"status"`
	Report     *CpanelReport `json:"report"`
	Items      []CpanelItem  `json:"items"`
	Error      *string       `json:"error"`
	CreatedBy  string        `json:"createdBy"`
	CreatedAt  time.Time     `json:"createdAt"`
	UpdatedAt  time.Time     `json:"updatedAt"`
	FinishedAt *time.Time    `json:"finishedAt"`
}

// Finished reports whether the import has ended (DONE, PARTIAL, FAILED).
func (i *CpanelImport) Finished() bool {
	return i.Status == "DONE" || i.Status == "PARTIAL" || i.Status == "FAILED"
}

// ImportCpanelInput is importCpanelBackup's input.
type ImportCpanelInput struct {
	Node     string  `json:"node"`
	Path     string  `json:"path"`
	Owner    string  `json:"owner"`
	Plan     string  `json:"plan"`
	Username *string `json:"username,omitempty"`
}

const cpanelItemFields = `kind name disposition note entry bytes`

const cpanelReportFields = `username layout mainDomain plan fidelityPercent archiveBytes homeFiles homeBytes
items{` + cpanelItemFields + `} domains{domain kind docroot aliasOf} mailboxes{address quotaBytes bytes messages}
databases{name engine bytes} databaseUsers{name engine grants{database privileges}} certificates{domain}
crons{schedule command} forwarders{source destinations} autoresponders{address subject} zones{name}`

const cpanelImportFields = `id node path owner plan account username status error createdBy createdAt updatedAt finishedAt
report{` + cpanelReportFields + `} items{` + cpanelItemFields + `}`

// AnalyzeCpanelBackup asks node to read the archive at path (relative to
// its import area) and report what an import would do.
func (c *Client) AnalyzeCpanelBackup(ctx context.Context, node, path string) (*CpanelReport, error) {
	var out struct{ AnalyzeCpanelBackup *CpanelReport }
	err := c.Do(ctx, `mutation($in:AnalyzeCpanelBackupInput!){analyzeCpanelBackup(input:$in){`+cpanelReportFields+`}}`,
		map[string]any{"in": map[string]any{"node": node, "path": path}}, &out)
	return out.AnalyzeCpanelBackup, err
}

// ImportCpanelBackup starts an import.
func (c *Client) ImportCpanelBackup(ctx context.Context, in ImportCpanelInput) (*CpanelImport, error) {
	var out struct{ ImportCpanelBackup *CpanelImport }
	err := c.Do(ctx, `mutation($in:ImportCpanelBackupInput!){importCpanelBackup(input:$in){`+cpanelImportFields+`}}`,
		map[string]any{"in": in}, &out)
	return out.ImportCpanelBackup, err
}

// CpanelImport reads one import; nil when there is none.
func (c *Client) CpanelImport(ctx context.Context, id string) (*CpanelImport, error) {
	var out struct{ CpanelImport *CpanelImport }
	err := c.Do(ctx, `query($id:ID!){cpanelImport(id:$id){`+cpanelImportFields+`}}`, map[string]any{"id": id}, &out)
	return out.CpanelImport, err
}

// AccountImport reads the import that created an account (by id or
// username); nil when none did or the account is not visible.
func (c *Client) AccountImport(ctx context.Context, ref string) (*CpanelImport, error) {
	type acct struct{ ImportReport *CpanelImport }
	var out struct{ ByID, ByName *acct }
	err := c.Do(ctx, `query($r:ID!,$n:String!){byID:account(id:$r){importReport{`+cpanelImportFields+`}} byName:account(username:$n){importReport{`+cpanelImportFields+`}}}`,
		map[string]any{"r": ref, "n": ref}, &out)
	if err != nil {
		return nil, err
	}
	if out.ByID != nil {
		return out.ByID.ImportReport, nil
	}
	if out.ByName != nil {
		return out.ByName.ImportReport, nil
	}
	return nil, nil
}

// CpanelImports lists a page of imports, oldest first, and the cursor of
// the next page ("" when this is the last).
func (c *Client) CpanelImports(ctx context.Context, first int, after string) ([]CpanelImport, string, error) {
	var out struct {
		CpanelImports struct {
			Edges    []struct{ Node CpanelImport }
			PageInfo struct {
				HasNextPage bool
				EndCursor   *string
			}
		}
	}
	vars := map[string]any{"c": optional(after)}
	if first > 0 {
		vars["n"] = first
	}
	err := c.Do(ctx, `query($n:Int,$c:String){cpanelImports(first:$n,after:$c){edges{node{`+cpanelImportFields+`}} pageInfo{hasNextPage endCursor}}}`,
		vars, &out)
	if err != nil {
		return nil, "", err
	}
	list := make([]CpanelImport, 0, len(out.CpanelImports.Edges))
	for _, e := range out.CpanelImports.Edges {
		list = append(list, e.Node)
	}
	next := ""
	if out.CpanelImports.PageInfo.HasNextPage && out.CpanelImports.PageInfo.EndCursor != nil {
		next = *out.CpanelImports.PageInfo.EndCursor
	}
	return list, next, nil
}
