package db

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

func TestReadHeader(t *testing.T) {
	const pgHead = "--\n-- PostgreSQL database dump\n--\n\n\\restrict EgrkRx9SbPXPLHQmd1janzWYTgNsntaXRFwwtOYaE9yAGjBYM3gfgJUBA22BCeU\n"
	for _, c := range []struct {
		guard, dump string
		ok          bool
	}{
		// As mariadb-dump 10.11.19 and pg_dump 15.18 write them.
		{mariadbGuard, mariadbGuard + " \n-- MariaDB dump 10.19\nCREATE TABLE t (i int);\n", true},
		{postgresGuard, pgHead + "SET statement_timeout = 0;\n", true},
		{mariadbGuard, "-- MariaDB dump\n" + mariadbGuard + "\n", false},
		{mariadbGuard, "\\! id\n" + mariadbGuard + "\n", false},
		{mariadbGuard, "", false},
		{postgresGuard, "--\n\\! id\n\\restrict abc\n", false},
		{postgresGuard, "\\restrict \n", false},
		{postgresGuard, "\\restrict abc", false}, // no end of line
		{postgresGuard, strings.Repeat("--\n", maxHeaderLines) + "\\restrict abc\n", false},
		{postgresGuard, "-- " + strings.Repeat("x", 1<<20) + "\n\\restrict abc\n", false},
	} {
		br := bufio.NewReaderSize(strings.NewReader(c.dump), 64<<10)
		head, err := Command{Guard: c.guard}.ReadHeader(br)
		if (err == nil) != c.ok {
			t.Errorf("%.60q: err %v", c.dump, err)
			continue
		}
		if err == nil {
			rest, _ := io.ReadAll(br)
			if string(head)+string(rest) != c.dump {
				t.Errorf("%.60q: head and rest differ from the dump", c.dump)
			}
		}
	}
}
