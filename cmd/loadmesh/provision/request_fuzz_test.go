package provision

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzReadRequest: any input is a clean one-line error or a valid request
// that survives a JSON round trip unchanged.
func FuzzReadRequest(f *testing.F) {
	for _, seed := range []string{
		`{"version":1,"id":"x","kind":"scale_out","count":2,"zone":"a","cluster":{"seeds":["127.0.0.1:7946"]}}`,
		`{"version":1,"kind":"scale_in","nodes":["n1","n2"]}`,
		`{"version":1,"kind":"replace","nodes":[]}`,
		`{"version":2,"kind":"scale_out","count":1}`,
		`{"version":1,"kind":"scale_out","count":-1}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := ReadRequest(bytes.NewReader(in))
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("ReadRequest accepted an invalid request: %v", err)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ReadRequest(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("re-reading %s: %v", b, err)
		}
		b2, _ := json.Marshal(again)
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the request:\n%s\n%s", b, b2)
		}
	})
}
