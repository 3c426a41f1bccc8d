package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// A snapshot is accepted only when its trailing SHA-256 matches what
// precedes it, however the body is split into reads.
func TestClusterSnapshotChecksum(t *testing.T) {
	db := bytes.Repeat([]byte("bbolt page "), 10000)
	sum := sha256.Sum256(db)
	whole := append(append([]byte{}, db...), sum[:]...)
	damaged := append([]byte{}, whole...)
	damaged[100] ^= 1
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
	}{
		{"whole", whole, true},
		{"one bit flipped", damaged, false},
		{"cut short", whole[:len(whole)-100], false},
		{"shorter than a checksum", whole[:10], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != SnapshotPath || r.Header.Get("Authorization") != "Bearer tok" {
					http.Error(w, "wrong request", http.StatusBadRequest)
					return
				}
				// Odd-sized writes: the checksum straddles reads.
				for b := tc.body; len(b) > 0; {
					n := min(len(b), 777)
					w.Write(b[:n])
					w.(http.Flusher).Flush()
					b = b[n:]
				}
			}))
			defer srv.Close()
			var out bytes.Buffer
			n, got, err := New(srv.URL, "tok").ClusterSnapshot(context.Background(), &out)
			if !tc.ok {
				if !errors.Is(err, ErrSnapshotCorrupt) {
					t.Fatalf("err = %v, want ErrSnapshotCorrupt", err)
				}
				return
			}
			fileSum := sha256.Sum256(tc.body)
			if err != nil || n != int64(len(tc.body)) || got != hex.EncodeToString(fileSum[:]) || !bytes.Equal(out.Bytes(), tc.body) {
				t.Fatalf("n=%d sum=%s err=%v", n, got, err)
			}
		})
	}
}

// Refusals come back with the API's error codes.
func TestClusterSnapshotRefusalCode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"errors":[{"message":"no","extensions":{"code":"FORBIDDEN"}}]}`))
	}))
	defer srv.Close()
	if _, _, err := New(srv.URL, "tok").ClusterSnapshot(context.Background(), &bytes.Buffer{}); CodeOf(err) != "FORBIDDEN" {
		t.Fatalf("err = %v, want FORBIDDEN", err)
	}
}
