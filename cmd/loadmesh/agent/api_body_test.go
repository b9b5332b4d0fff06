package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeBodyStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want int
	}{
		{"over the limit", `{"reason":"` + strings.Repeat("a", maxAPIBody) + `"}`, http.StatusRequestEntityTooLarge},
		{"trailing data", `{"reason":"a"} x`, http.StatusBadRequest},
		{"not JSON", `{`, http.StatusBadRequest},
	} {
		var req nodeActionRequest
		err := decodeBody(httptest.NewRequest("POST", "/", strings.NewReader(tc.body)), &req)
		if err == nil {
			t.Errorf("%s: decodeBody accepted it", tc.name)
			continue
		}
		if got := bodyStatus(err); got != tc.want {
			t.Errorf("%s: status %d (%v), want %d", tc.name, got, err, tc.want)
		}
	}
	var req nodeActionRequest
	if err := decodeBody(httptest.NewRequest("POST", "/", strings.NewReader(`{"reason":"ok"}`)), &req); err != nil || req.Reason != "ok" {
		t.Errorf("valid body: %v, reason %q", err, req.Reason)
	}
}
