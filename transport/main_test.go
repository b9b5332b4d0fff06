package transport

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// PeerServer must have waited for everything it started by the time its
// Shutdown returns. Keep this the package's only TestMain.
func TestMain(m *testing.M) {
	// Loopback tests do not need large socket buffers; keep quic-go from
	// warning that it could not raise them.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	goleak.VerifyTestMain(m)
}
