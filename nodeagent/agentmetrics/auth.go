package agentmetrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/npanel/npanel/internal/atomicfile"
)

// ScrapeAuthFile, in the agent's data dir, holds the scrape token digests
// last received from the server (hex SHA-256, one a line; never a token),
// so that an agent restarted while the server is away still admits
// Prometheus.
const ScrapeAuthFile = "scrape-auth"

// TokenSet is the set of scrape token digests /metrics admits. Reads are
// lock-free: every scrape checks it.
type TokenSet struct {
	path string // "" keeps it in memory only
	set  atomic.Pointer[[][sha256.Size]byte]
	mu   sync.Mutex // serialises Replace's writes of the file
}

// LoadTokenSet reads the persisted set at path; a missing file is an empty
// set. An empty path keeps the set in memory only. On an error the set
// returned is empty but usable, and its next Replace rewrites the file.
func LoadTokenSet(path string) (*TokenSet, error) {
	s := &TokenSet{path: path}
	s.set.Store(&[][sha256.Size]byte{})
	if path == "" {
		return s, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read scrape tokens: %w", err)
	}
	var ds [][]byte
	for _, line := range strings.Fields(string(data)) {
		d, err := hex.DecodeString(line)
		if err != nil || len(d) != sha256.Size {
			return s, fmt.Errorf("read scrape tokens: %s holds a line that is not a SHA-256 digest", path)
		}
		ds = append(ds, d)
	}
	s.store(ds)
	return s, nil
}

// Replace makes digests (SHA-256 of each token, from ScrapeAuth) the set
// and persists it (mode 0600). A digest of the wrong length is refused and
// nothing changes.
func (s *TokenSet) Replace(digests [][]byte) error {
	var b strings.Builder
	for _, d := range digests {
		if len(d) != sha256.Size {
			return fmt.Errorf("scrape auth: digest of %d bytes, want %d", len(d), sha256.Size)
		}
		b.WriteString(hex.EncodeToString(d))
		b.WriteByte('\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.path != "" {
		// Written before it takes effect, so a set in use is one a
		// restart finds again.
		if werr := atomicfile.WriteFile(s.path, []byte(b.String()), 0o600, nil); werr != nil {
			err = fmt.Errorf("persist scrape tokens: %w", werr)
		}
	}
	// In effect even if the write failed: the server's word is the newest.
	s.store(digests)
	return err
}

func (s *TokenSet) store(digests [][]byte) {
	set := make([][sha256.Size]byte, len(digests))
	for i, d := range digests {
		copy(set[i][:], d)
	}
	s.set.Store(&set)
}

// Len is the number of tokens admitted.
func (s *TokenSet) Len() int { return len(*s.set.Load()) }

// Admit reports whether token's digest is in the set. Every digest is
// compared in constant time, and all of them every time, so the timing
// tells nothing about which one nearly matched.
func (s *TokenSet) Admit(token string) bool {
	if token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	ok := 0
	for _, d := range *s.set.Load() {
		ok |= subtle.ConstantTimeCompare(sum[:], d[:])
	}
	return ok == 1
}
