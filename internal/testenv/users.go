package testenv

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/npanel/npanel/validate"
)

// testUsers are the Linux users tests asked for. A test that fails while an
// agent is still creating its account's user can leave it behind the test's
// own cleanup (which runs before the agent stops); MainRemovingTestUsers
// removes them all once every agent is gone.
var testUsers sync.Map

// TestUsername returns a fresh account name under the reserved test prefix,
// remembered for MainRemovingTestUsers.
func TestUsername() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	name := validate.TestUserPrefix + string(b)
	testUsers.Store(name, true)
	return name
}

// RemoveUserAtCleanup removes the Linux user name when t ends, whatever
// happened in the test.
func RemoveUserAtCleanup(t testing.TB, name string) {
	t.Cleanup(func() {
		if err := removeUser(name); err != nil {
			t.Error(err)
		}
	})
}

// MainRemovingTestUsers runs the package's tests, then removes every test
// user still on the machine, and exits.
func MainRemovingTestUsers(m *testing.M) {
	code := m.Run()
	testUsers.Range(func(k, _ any) bool {
		if err := removeUser(k.(string)); err != nil {
			fmt.Fprintln(os.Stderr, "leftover", err)
			code = 1
		}
		return true
	})
	os.Exit(code)
}

// HasUser reports whether the machine has the Linux user name.
func HasUser(name string) bool {
	b, err := os.ReadFile("/etc/passwd")
	return err == nil && strings.Contains(string(b), "\n"+name+":")
}

func removeUser(name string) error {
	if !HasUser(name) {
		return nil
	}
	// -f: a test that failed half way may leave the account's PHP pool
	// running as the user until the agent stops.
	if out, err := exec.Command("/usr/sbin/userdel", "-f", name).CombinedOutput(); err != nil {
		return fmt.Errorf("remove test user %s: %v: %s", name, err, out)
	}
	return nil
}
