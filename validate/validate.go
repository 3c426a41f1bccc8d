// Package validate holds the input validators shared by the API and the node
// agent. Every value a user can send passes through one of these before it is
// stored, and again on the node before it touches the host.
package validate

import (
	"fmt"
	"net/netip"
	"slices"
	"unicode/utf8"
)

// Error is a validation failure: the field and why. Callers map it to
// INVALID_INPUT (API) or a refused action (agent).
type Error struct {
	Field  string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

func fail(field, format string, args ...any) error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// NodeAddress accepts a unicast IPv4 or IPv6 address, the address other nodes
// and the control plane use to reach the node.
func NodeAddress(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fail("address", "%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return fail("address", "%q has a zone; give a plain address", s)
	}
	if a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
		return fail("address", "%q is not a unicast address", s)
	}
	return nil
}

// NodeRoles are the roles a node can carry.
var NodeRoles = []string{"web", "dns", "mail", "db", "backup"}

// Roles accepts a non-empty set of known roles without repeats.
func Roles(roles []string) error {
	if len(roles) == 0 {
		return fail("roles", "at least one role is required (one of %v)", NodeRoles)
	}
	seen := map[string]bool{}
	for _, r := range roles {
		if !slices.Contains(NodeRoles, r) {
			return fail("roles", "unknown role %q (one of %v)", r, NodeRoles)
		}
		if seen[r] {
			return fail("roles", "role %q given twice", r)
		}
		seen[r] = true
	}
	return nil
}

// MaxLabels bounds how many labels one node carries.
const MaxLabels = 64

// LabelKey accepts keys of the Kubernetes label-name shape: 1–63 characters,
// [a-z0-9] at both ends, [a-z0-9._-] inside, with an optional "prefix/" of
// the same shape up to 253 characters. Scheduler selectors match these keys
// literally, so a narrow alphabet keeps selector syntax unambiguous.
func LabelKey(k string) error {
	name := k
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			if err := labelPart(k[:i], 253, "label key prefix"); err != nil {
				return err
			}
			name = k[i+1:]
			break
		}
	}
	return labelPart(name, 63, "label key")
}

// LabelValue accepts "" or the label-name shape, up to 63 characters.
func LabelValue(v string) error {
	if v == "" {
		return nil
	}
	return labelPart(v, 63, "label value")
}

func labelPart(s string, max int, field string) error {
	if s == "" {
		return fail(field, "must not be empty")
	}
	if len(s) > max {
		return fail(field, "%q is longer than %d characters", s, max)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		inner := c == '-' || c == '_' || c == '.'
		if !alnum && (!inner || i == 0 || i == len(s)-1) {
			return fail(field, "%q must be lowercase letters, digits and -_. inside, starting and ending with a letter or digit", s)
		}
	}
	return nil
}

// Labels validates a whole label set.
func Labels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fail("labels", "at most %d labels", MaxLabels)
	}
	for k, v := range labels {
		if err := LabelKey(k); err != nil {
			return err
		}
		if err := LabelValue(v); err != nil {
			return err
		}
	}
	return nil
}

// Text accepts free text for display (descriptions, payloads): valid UTF-8,
// no control characters but tab, at most max bytes.
func Text(field, s string, max int) error {
	if len(s) > max {
		return fail(field, "longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return fail(field, "not valid UTF-8")
	}
	for _, r := range s {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return fail(field, "contains control character %U", r)
		}
	}
	return nil
}
