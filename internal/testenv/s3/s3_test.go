package s3

import "testing"

func TestStart(t *testing.T) {
	s := Start(t)
	if s.Endpoint == "" || s.PID == 0 {
		t.Fatalf("%+v", s)
	}
}
