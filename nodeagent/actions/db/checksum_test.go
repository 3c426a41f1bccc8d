package db

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func sums(engine, objects string, tables ...TableSum) DatabaseSums {
	return DatabaseSums{Engine: engine, Objects: objects, Tables: tables}
}

func TestChangedTables(t *testing.T) {
	a := TableSum{Name: "a", Schema: "s1", Data: "1"}
	b := TableSum{Name: "b", Schema: "s2", Data: "2"}
	bRows := TableSum{Name: "b", Schema: "s2", Data: "3"}
	bDef := TableSum{Name: "b", Schema: "s9", Data: "2"}
	c := TableSum{Name: "c", Schema: "s3", Data: "4"}
	for _, tc := range []struct {
		name     string
		src, dst DatabaseSums
		changed  []string
		ok       bool
	}{
		{"same", sums("mariadb", "o", a, b), sums("mariadb", "o", a, b), nil, true},
		{"empty", sums("mariadb", "o"), sums("mariadb", "o"), nil, true},
		{"rows", sums("mariadb", "o", a, b), sums("mariadb", "o", a, bRows), []string{"b"}, true},
		{"definition", sums("mariadb", "o", a, b), sums("mariadb", "o", a, bDef), []string{"b"}, true},
		{"new table", sums("mariadb", "o", a, b, c), sums("mariadb", "o", a, b), nil, false},
		{"dropped table", sums("mariadb", "o", a), sums("mariadb", "o", a, b), nil, false},
		{"renamed", sums("mariadb", "o", a, c), sums("mariadb", "o", a, b), nil, false},
		{"objects", sums("mariadb", "o", a), sums("mariadb", "p", a), nil, false},
		{"no objects", sums("mariadb", "", a), sums("mariadb", "", a), nil, false},
		{"no checksum", sums("mariadb", "o", TableSum{Name: "a", Schema: "s"}), sums("mariadb", "o", TableSum{Name: "a", Schema: "s"}), nil, false},
		{"engines", sums("mariadb", "o", a), sums("postgresql", "o", a), nil, false},
		{"postgres same", sums("postgresql", "o", a), sums("postgresql", "o", a), nil, true},
		{"postgres changed", sums("postgresql", "o", a, b), sums("postgresql", "o", a, bRows), nil, false},
	} {
		changed, ok, why := ChangedTables(tc.src, tc.dst)
		if ok != tc.ok || !slices.Equal(changed, tc.changed) || ok == (why != "") {
			t.Errorf("%s: %v %v %q; want %v %v", tc.name, changed, ok, why, tc.changed, tc.ok)
		}
	}
}

func TestTableArgs(t *testing.T) {
	for _, ok := range [][]string{{"t"}, {"odd `name"}, {"a-b", "ünï"}, {"x--y"}} {
		if err := tableArgs(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range [][]string{{""}, {"-x"}, {"t", "--result-file=/etc/passwd"}, {"a\x00b"}, {strings.Repeat("a", 300)}} {
		if err := tableArgs(bad); !errors.Is(err, ErrTableName) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
