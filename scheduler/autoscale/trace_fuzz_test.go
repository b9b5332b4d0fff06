package autoscale

import (
	"math"
	"strings"
	"testing"
)

// FuzzReadTrace: any input is either a clean error or a trace whose rows
// are in increasing time order with finite, non-negative rates.
func FuzzReadTrace(f *testing.F) {
	for _, seed := range []string{
		"timestamp,rps\n2026-01-01T00:00:00Z,10\n2026-01-01T00:01:00Z,12\n",
		"time,count\n1700000000,600\n1700000060,660\n",
		"# comment\n\ndate,requests\n2026-01-01,100\n2026-01-02,120\n",
		"timestamp,rps\n2026-01-01 00:00:00,NaN\n",
		"timestamp,rps\n2026-01-01T00:01:00Z,1\n2026-01-01T00:00:00Z,1\n",
		"a,b,c\n1,2,3\n",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ReadTrace(strings.NewReader(in), "fuzz")
		if err != nil {
			if strings.Contains(err.Error(), "\x00") {
				t.Fatalf("error carries a NUL: %q", err)
			}
			return
		}
		for i, s := range tr.Samples {
			if math.IsNaN(s.RPS) || math.IsInf(s.RPS, 0) || s.RPS < 0 {
				t.Fatalf("sample %d has rate %v", i, s.RPS)
			}
			if i > 0 && !s.Time.After(tr.Samples[i-1].Time) {
				t.Fatalf("sample %d at %v is not after %v", i, s.Time, tr.Samples[i-1].Time)
			}
		}
	})
}
