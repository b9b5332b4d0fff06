package agent

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

// FuzzAPIInput feeds the API's decoders what a hostile client could send:
// a node-action body, a node name from the URL path, and a plan file. Each
// either succeeds or fails with a clean one-line error; none panics.
func FuzzAPIInput(f *testing.F) {
	f.Add([]byte(`{"reason":"kernel update"}`), "node-1", []byte("mode: auto\nlimits: {min_active: 1, max_active: 4}\n"))
	f.Add([]byte(`{"reason":1}`), "../../etc/passwd", []byte("limits: {min_active: 5, max_active: 1}\n"))
	f.Add([]byte(`{"reason":"x","extra":true}`), "a\x00b", []byte("schedules: [{name: x, start: '* * * *', duration: 9999d}]\n"))
	f.Add([]byte(`{`), "..", []byte("{{{"))
	f.Add([]byte(strings.Repeat("[", 10000)), strings.Repeat("n", 200), []byte("targets: {inflight_utilisation: -1}\n"))
	f.Fuzz(func(t *testing.T, body []byte, name string, plan []byte) {
		r := httptest.NewRequest("POST", "/v1/nodes/x/drain", bytes.NewReader(body))
		var req nodeActionRequest
		if err := decodeBody(r, &req); err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("body error is not one line: %q", err)
		}
		if err := validateName(name); err == nil {
			if name == "" || strings.ContainsAny(name, "/\\\x00") || name == "." || name == ".." {
				t.Fatalf("validateName accepted %q", name)
			}
		} else if strings.Contains(err.Error(), "\n") {
			t.Fatalf("name error is not one line: %q", err)
		}
		if spec, err := autoscale.ParseSpec(plan); err == nil {
			if err := spec.Validate(); err != nil {
				t.Fatalf("ParseSpec accepted a spec that does not validate: %v", err)
			}
		}
	})
}
