package account

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestWalkUsage counts like du -sx: blocks not sizes, a hard-linked file
// once, symlinks not followed.
func TestWalkUsage(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(big, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr", filepath.Join(dir, "usr")); err != nil {
		t.Fatal(err)
	}
	bytes, inodes, err := WalkUsage(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	// dir, big (once), the symlink.
	if inodes != 3 || bytes < 64<<10 || bytes > 64<<10+64<<10 {
		t.Fatalf("WalkUsage = %d bytes, %d inodes", bytes, inodes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := WalkUsage(ctx, "/usr"); err == nil {
		t.Fatal("a cancelled walk of /usr finished")
	}
}
