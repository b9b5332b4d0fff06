package agent

import (
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		err  bool
	}{
		{"1048576", 1 << 20, false},
		{"64MiB", 64 << 20, false},
		{"64mib", 64 << 20, false},
		{"512KiB", 512 << 10, false},
		{"2GiB", 2 << 30, false},
		{"100MB", 100e6, false},
		{"1.5GB", 1.5e9, false},
		{"256M", 256 << 20, false},
		{"10B", 10, false},
		{"", 0, true},
		{"-1MiB", 0, true},
		{"lots", 0, true},
		{"1XB", 0, true},
	}
	for _, tc := range cases {
		got, err := ParseByteSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestCacheConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name, cfg.Dev = "a", true
	cfg.Cache = []string{"/api/", "example.org/static/"}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid cache config refused: %v", err)
	}
	cfg.Cache = []string{"api", "/a b/"}
	cfg.CacheSize = 1000
	err := cfg.Validate()
	if err == nil {
		t.Fatal("bad cache config accepted")
	}
	for _, want := range []string{`--cache "api"`, `--cache "/a b/"`, "--cache-size 1000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
