package postgres

import (
	"context"
	"testing"
)

func TestStart(t *testing.T) {
	s := Start(t)
	c := s.MustConnect(t, "postgres")
	var v string
	if err := c.QueryRow(context.Background(), "SELECT version()").Scan(&v); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s pid %d", v, s.PID)
}
