package agent

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseTags(t *testing.T) {
	tags, err := ParseTags([]string{"cost_per_hour=0.42", "spot=true", "carbon_region=eu-north-1", "team=tax"})
	if err != nil || len(tags) != 4 || tags["cost_per_hour"] != "0.42" || tags["team"] != "tax" {
		t.Fatalf("tags %v, err %v", tags, err)
	}
	if tags, err := ParseTags(nil); err != nil || tags != nil {
		t.Fatalf("no tags: %v %v", tags, err)
	}
	many := make([]string, 17)
	for i := range many {
		many[i] = string(rune('a'+i)) + "=1"
	}
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"novalue"}, `--tag "novalue": want key=value`},
		{[]string{"=x"}, `--tag "=x"`},
		{[]string{"bad key=x"}, `--tag "bad key=x"`},
		{[]string{"a=1", "a=2"}, "a given twice"},
		{[]string{"cost_per_hour=cheap"}, "cost_per_hour"},
		{[]string{"spot=maybe"}, "spot"},
		{[]string{"v=" + strings.Repeat("x", 65)}, "at most 64 bytes"},
		{many, "at most 16 tags"},
	} {
		_, err := ParseTags(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseTags(%q) = %v, want one line containing %q", tc.in, err, tc.want)
		}
	}
}

func TestDecodeBodyRefusesTrailingData(t *testing.T) {
	for body, ok := range map[string]bool{
		`{"reason":"x"}`:         true,
		"{\"reason\":\"x\"}\n  ": true,
		``:                       true,
		`{"reason":"x"}{"a":1}`:  false,
		`{"reason":"x"} junk`:    false,
		`{"reason":"x"}]`:        false,
	} {
		var req nodeActionRequest
		err := decodeBody(httptest.NewRequest("POST", "/", strings.NewReader(body)), &req)
		if (err == nil) != ok {
			t.Errorf("decodeBody(%q) = %v, want ok=%v", body, err, ok)
		}
	}
}
