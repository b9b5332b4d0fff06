package provision

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: Run
// must have waited for everything it started (pipe copiers, HTTP
// requests) before it returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
