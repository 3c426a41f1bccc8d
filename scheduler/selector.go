package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/npanel/npanel/validate"
)

// MaxSelectorLen bounds a selector's text. Resellers' node pools are a few
// requirements long; the bound keeps a hostile input from costing more than
// a trivial parse.
const MaxSelectorLen = 4096

// Selector is a compiled label selector, the set-based subset of Kubernetes
// label selectors. Requirements are joined by commas and must all hold:
//
//	zone=eu-1          the label is present with this value ("==" also works)
//	tier!=cheap        the label is absent or has another value
//	ssd                the label is present, with any value
//	!legacy            the label is absent
//	region in (a,b)    the label is present with one of these values
//	disk notin (hdd)   the label is absent or has none of these values
//
// The empty selector, and the zero Selector, select every node. A key may
// appear in only one requirement: "zone=a,zone!=b" is refused rather than
// silently reduced, and the rule makes the canonical form unique.
type Selector struct {
	reqs []requirement // sorted by key; keys unique
	text string        // canonical form: the snapshot's cache key
}

type operator uint8

const (
	opEquals operator = iota
	opNotEquals
	opExists
	opNotExists
	opIn
	opNotIn
)

type requirement struct {
	key    string
	op     operator
	values []string // one value for = and !=; sorted and unique for in/notin
}

func (r *requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.key]
	switch r.op {
	case opEquals:
		return ok && v == r.values[0]
	case opNotEquals:
		return !ok || v != r.values[0]
	case opExists:
		return ok
	case opNotExists:
		return !ok
	case opIn:
		return ok && slices.Contains(r.values, v)
	case opNotIn:
		return !ok || !slices.Contains(r.values, v)
	}
	return false
}

// Matches reports whether a node with these labels is selected.
func (s Selector) Matches(labels map[string]string) bool {
	for i := range s.reqs {
		if !s.reqs[i].matches(labels) {
			return false
		}
	}
	return true
}

// Empty reports whether the selector selects every node.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// String returns the canonical form: requirements sorted by key, set values
// sorted and unique, no spaces but the ones "in" and "notin" need. Equal
// selectors have equal canonical forms, and ParseSelector reads it back.
func (s Selector) String() string { return s.text }

func (s Selector) canonical() string {
	var b strings.Builder
	for i, r := range s.reqs {
		if i > 0 {
			b.WriteByte(',')
		}
		switch r.op {
		case opEquals:
			b.WriteString(r.key + "=" + r.values[0])
		case opNotEquals:
			b.WriteString(r.key + "!=" + r.values[0])
		case opExists:
			b.WriteString(r.key)
		case opNotExists:
			b.WriteString("!" + r.key)
		case opIn, opNotIn:
			b.WriteString(r.key)
			if r.op == opIn {
				b.WriteString(" in (")
			} else {
				b.WriteString(" notin (")
			}
			b.WriteString(strings.Join(r.values, ","))
			b.WriteByte(')')
		}
	}
	return b.String()
}

// SelectorError is a selector refused by ParseSelector. Offset is the byte
// offset in the input where the problem was found, so a console can point at
// it. Err is the *validate.Error when a key or value has the wrong shape.
type SelectorError struct {
	Offset int
	Reason string
	Err    error
}

func (e *SelectorError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("at offset %d: %v", e.Offset, e.Err)
	}
	return fmt.Sprintf("at offset %d: %s", e.Offset, e.Reason)
}

func (e *SelectorError) Unwrap() error { return e.Err }

// ParseSelector compiles a selector. Keys must pass validate.LabelKey and
// values validate.LabelValue, the same rules node labels obey, so nothing a
// selector names can be mistaken for syntax. An empty value is allowed only
// after = and != ("tier=" selects an empty label value, as in Kubernetes);
// an empty member of a set is refused, being far more often a stray comma.
func ParseSelector(s string) (Selector, error) {
	if len(s) > MaxSelectorLen {
		return Selector{}, &SelectorError{Offset: MaxSelectorLen, Reason: fmt.Sprintf("longer than %d bytes", MaxSelectorLen)}
	}
	p := parser{lex: lexer{s: s}}
	p.advance()
	if p.tok.kind == tokEOF {
		return Selector{}, nil
	}
	var reqs []requirement
	var offsets []int
	for {
		if p.tok.kind == tokEOF || p.tok.kind == tokComma {
			return Selector{}, p.fail("empty requirement (stray comma?)")
		}
		off := p.tok.off
		r, err := p.requirement()
		if err != nil {
			return Selector{}, err
		}
		reqs = append(reqs, r)
		offsets = append(offsets, off)
		switch p.tok.kind {
		case tokEOF:
			return compile(reqs, offsets)
		case tokComma:
			p.advance()
		default:
			return Selector{}, p.fail(fmt.Sprintf("expected \",\" or the end after a requirement, found %s", p.tok))
		}
	}
}

func compile(reqs []requirement, offsets []int) (Selector, error) {
	// Report the second occurrence of a duplicate key, where the user's eye
	// will be after writing the first.
	seen := make(map[string]bool, len(reqs))
	for i, r := range reqs {
		if seen[r.key] {
			return Selector{}, &SelectorError{Offset: offsets[i], Reason: fmt.Sprintf(
				"label key %q appears twice; use one requirement per key (e.g. %s in (a,b))", r.key, r.key)}
		}
		seen[r.key] = true
	}
	slices.SortFunc(reqs, func(a, b requirement) int { return cmp.Compare(a.key, b.key) })
	sel := Selector{reqs: reqs}
	sel.text = sel.canonical()
	return sel, nil
}

type parser struct {
	lex lexer
	tok token
}

func (p *parser) advance() { p.tok = p.lex.next() }

func (p *parser) fail(reason string) error {
	return &SelectorError{Offset: p.tok.off, Reason: reason}
}

func (p *parser) requirement() (requirement, error) {
	if p.tok.kind == tokBang {
		p.advance()
		key, err := p.key()
		if err != nil {
			return requirement{}, err
		}
		return requirement{key: key, op: opNotExists}, nil
	}
	key, err := p.key()
	if err != nil {
		return requirement{}, err
	}
	switch p.tok.kind {
	case tokEOF, tokComma:
		return requirement{key: key, op: opExists}, nil
	case tokEq, tokNeq:
		op := opEquals
		if p.tok.kind == tokNeq {
			op = opNotEquals
		}
		p.advance()
		v := ""
		if p.tok.kind == tokIdent {
			if v, err = p.value(); err != nil {
				return requirement{}, err
			}
		}
		return requirement{key: key, op: op, values: []string{v}}, nil
	case tokIdent:
		var op operator
		switch p.tok.text {
		case "in":
			op = opIn
		case "notin":
			op = opNotIn
		default:
			return requirement{}, p.fail(fmt.Sprintf("expected an operator (=, !=, in, notin) after label key %q, found %s", key, p.tok))
		}
		p.advance()
		values, err := p.set()
		if err != nil {
			return requirement{}, err
		}
		return requirement{key: key, op: op, values: values}, nil
	}
	return requirement{}, p.fail(fmt.Sprintf("expected an operator (=, !=, in, notin) after label key %q, found %s", key, p.tok))
}

func (p *parser) key() (string, error) {
	if p.tok.kind != tokIdent {
		return "", p.fail(fmt.Sprintf("expected a label key, found %s", p.tok))
	}
	if err := validate.LabelKey(p.tok.text); err != nil {
		return "", &SelectorError{Offset: p.tok.off, Err: err}
	}
	k := p.tok.text
	p.advance()
	return k, nil
}

func (p *parser) value() (string, error) {
	if err := validate.LabelValue(p.tok.text); err != nil {
		return "", &SelectorError{Offset: p.tok.off, Err: err}
	}
	v := p.tok.text
	p.advance()
	return v, nil
}

// set reads "(v1,v2,...)" and returns the values sorted and unique.
func (p *parser) set() ([]string, error) {
	if p.tok.kind != tokLParen {
		return nil, p.fail(fmt.Sprintf("expected \"(\" to open a set of values, found %s", p.tok))
	}
	p.advance()
	if p.tok.kind == tokRParen {
		return nil, p.fail("empty set of values")
	}
	var values []string
	for {
		if p.tok.kind != tokIdent {
			return nil, p.fail(fmt.Sprintf("expected a value in the set, found %s", p.tok))
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		values = append(values, v)
		switch p.tok.kind {
		case tokComma:
			p.advance()
		case tokRParen:
			p.advance()
			slices.Sort(values)
			return slices.Compact(values), nil
		default:
			return nil, p.fail(fmt.Sprintf("expected \",\" or \")\" in the set, found %s", p.tok))
		}
	}
}

type tokenKind uint8

const (
	tokEOF tokenKind = iota
	tokIdent
	tokEq     // = or ==
	tokNeq    // !=
	tokBang   // !
	tokLParen // (
	tokRParen // )
	tokComma  // ,
)

type token struct {
	kind tokenKind
	text string
	off  int
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "the end"
	}
	return fmt.Sprintf("%q", t.text)
}

// lexer splits a selector into tokens. An identifier is any run of bytes
// that are not punctuation or blanks; it is not restricted to the label
// alphabet here, so that "b;rm" reaches validate.LabelValue whole and the
// user is told what is wrong with it, not that ";" is an unexpected token.
type lexer struct {
	s   string
	pos int
}

func isPunct(c byte) bool {
	switch c {
	case ' ', '\t', ',', '(', ')', '=', '!':
		return true
	}
	return false
}

func (l *lexer) next() token {
	for l.pos < len(l.s) && (l.s[l.pos] == ' ' || l.s[l.pos] == '\t') {
		l.pos++
	}
	start := l.pos
	if l.pos >= len(l.s) {
		return token{kind: tokEOF, off: start}
	}
	emit := func(k tokenKind, n int) token {
		l.pos += n
		return token{kind: k, text: l.s[start:l.pos], off: start}
	}
	switch l.s[l.pos] {
	case ',':
		return emit(tokComma, 1)
	case '(':
		return emit(tokLParen, 1)
	case ')':
		return emit(tokRParen, 1)
	case '=':
		if strings.HasPrefix(l.s[l.pos:], "==") {
			return emit(tokEq, 2)
		}
		return emit(tokEq, 1)
	case '!':
		if strings.HasPrefix(l.s[l.pos:], "!=") {
			return emit(tokNeq, 2)
		}
		return emit(tokBang, 1)
	}
	for l.pos < len(l.s) && !isPunct(l.s[l.pos]) {
		l.pos++
	}
	return token{kind: tokIdent, text: l.s[start:l.pos], off: start}
}
