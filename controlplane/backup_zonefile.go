package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/protos/agentpb"
)

// The account's zones go into a backup as BIND zone files (the node
// stores each as zone/<name>.zone), written as the primary serves the
// zone: its records, the apex NS set and the glue ensureSpec adds, each
// record of the zone's own with its id in a comment ("; id=r12"). A
// restore writes the zone's records back from the file. The state then
// holds the zone without its records (RecordsInFile), so that the task
// carries them once; backups made before the files existed, and a zone
// whose file could not be written, are restored from the state's records.

// backupZoneFiles renders the zones of state. A zone that cannot be
// rendered (its records do not validate) travels with its error, which
// the node reports as the failed item zone:<name>: the backup is PARTIAL,
// and the state still holds the zone's records.
func (bc *backupController) backupZoneFiles(ctx context.Context, state *BackupState) ([]*agentpb.BackupZoneFile, error) {
	if len(state.Zones) == 0 {
		return nil, nil
	}
	view, err := bc.s.dnsViews.get(ctx, bc.st)
	if err != nil {
		return nil, err
	}
	var out []*agentpb.BackupZoneFile
	for _, zs := range state.Zones {
		z, _, err := bc.st.GetZone(ctx, zs.Name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		f := &agentpb.BackupZoneFile{Name: zs.Name}
		if f.Text, err = zoneFile(z, view); err != nil {
			f.Error = "write the zone file: " + err.Error()
		}
		out = append(out, f)
	}
	return out, nil
}

// zoneFile is z as a BIND zone file, as its primary serves it. Glue whose
// address is unknown (the primary is not a running DNS server now, or
// there is none at all) is left out: the records are what matters, and the
// control plane adds glue again at every ensure.
func zoneFile(z *store.Zone, view *dnsView) (string, error) {
	spec, err := ensureSpec(z, view)
	if err != nil {
		return "", err
	}
	dz := dnszone.Zone{Name: z.Name, Nameservers: spec.GetNameservers()}
	for _, r := range spec.GetRecords() {
		if r.GetContent() == "" {
			continue
		}
		dz.Records = append(dz.Records, dnszone.Record{Name: r.GetName(), Type: r.GetType(), Content: r.GetContent(), TTL: r.GetTtl(), Priority: r.GetPriority()})
	}
	ids := make(map[recordKey]string, len(z.Records))
	for _, r := range z.Records {
		ids[keyOf(r.Name, r.Type, r.Content, r.Priority)] = r.ID
	}
	return dnszone.WriteZoneNoted(dz, z.Serial, func(r dnszone.Record) string {
		if id := ids[keyOf(r.Name, r.Type, r.Content, r.Priority)]; validRecordID(id) {
			return idNote + id
		}
		return ""
	})
}

// idNote starts the comment that carries a record's id in a zone file.
const idNote = "id="

// recordKey is what makes a record the same record in a zone file.
type recordKey struct {
	name, typ, content string
	prio               uint32
}

func keyOf(name, typ, content string, prio uint32) recordKey {
	return recordKey{strings.ToLower(name), typ, content, prio}
}

// validRecordID accepts a zone record's id (store.Zone.NewRecordID: "r"
// and a number).
func validRecordID(id string) bool {
	if len(id) < 2 || len(id) > 21 || id[0] != 'r' {
		return false
	}
	for _, c := range id[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// noteID is the record id a zone file's line carries in its comment, or
// "".
func noteID(line string) string {
	i := strings.LastIndex(line, " ; "+idNote)
	if i < 0 {
		return ""
	}
	if id := strings.TrimSpace(line[i+len(" ; "+idNote):]); validRecordID(id) {
		return id
	}
	return ""
}

// zoneFromFile reads zone zs's records back from its BIND file text.
// Records whose ids the file's comments (or, in older backups, the
// state's records) give keep them, so that a restored record is the same
// record to API clients; the rest get new ids (blank here, filled in by
// the caller). Glue, an address record at one of the
// zone's own nameserver names that the state does not hold, is left out:
// the control plane adds it at every ensure. Any line the parser refuses
// fails the zone: a backup's file is ours, so a refusal means damage.
func zoneFromFile(zs BackupStateZone, text string) (BackupStateZone, error) {
	im, err := dnszone.ParseZone(zs.Name, text)
	if err != nil {
		return zs, fmt.Errorf("zone file: %w", err)
	}
	for _, l := range im.Lines {
		if !l.Imported {
			return zs, fmt.Errorf("zone file line %d: %s", l.Line, l.Reason)
		}
	}
	ids := map[recordKey]string{}
	for _, r := range zs.Records {
		ids[keyOf(r.Name, r.Type, r.Content, r.Priority)] = r.ID
	}
	lines := strings.Split(text, "\n")
	for _, l := range im.Lines {
		if l.Record == nil || l.Line < 1 || l.Line > len(lines) {
			continue
		}
		if id := noteID(lines[l.Line-1]); id != "" {
			ids[keyOf(l.Record.Name, l.Record.Type, l.Record.Content, l.Record.Priority)] = id
		}
	}
	inZoneNS := map[string]bool{}
	for _, ns := range im.Nameservers {
		if ns == im.Zone || strings.HasSuffix(ns, "."+im.Zone) {
			inZoneNS[ns] = true
		}
	}
	out := zs
	out.Records = make([]store.ZoneRecord, 0, len(im.Records))
	for _, r := range im.Records {
		id, known := ids[keyOf(r.Name, r.Type, r.Content, r.Priority)]
		if !known && inZoneNS[r.Name] && (r.Type == dnszone.TypeA || r.Type == dnszone.TypeAAAA) {
			continue
		}
		out.Records = append(out.Records, store.ZoneRecord{ID: id, Name: r.Name, Type: r.Type, Content: r.Content, TTL: r.TTL, Priority: r.Priority})
	}
	return out, nil
}
