package cluster

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
)

func TestExpandJoinResolvesNamesToEveryAddress(t *testing.T) {
	c := &Cluster{log: slog.New(slog.DiscardHandler)}
	c.cfg.Join = []string{
		"10.0.0.1:7946",
		"seeds.example:8000", // a name with three addresses
		"[2001:db8::1]:7946",
		"plain.example", // bare name: default port
		"gone.example:7946",
		"10.0.0.1:7946", // duplicate
	}
	var asked []string
	c.cfg.LookupHost = func(_ context.Context, host string) ([]string, error) {
		asked = append(asked, host)
		switch host {
		case "seeds.example":
			return []string{"10.0.1.3", "10.0.1.1", "fd00::2"}, nil
		case "plain.example":
			return []string{"10.0.2.1"}, nil
		}
		return nil, errors.New("no such host")
	}
	got := c.expandJoin(context.Background())
	want := []string{"10.0.0.1:7946", "10.0.1.1:8000", "10.0.1.3:8000", "[fd00::2]:8000", "[2001:db8::1]:7946",
		"10.0.2.1:7946", "gone.example:7946"}
	if !slices.Equal(got, want) {
		t.Fatalf("expandJoin =\n %v\nwant\n %v", got, want)
	}
	if !slices.Equal(asked, []string{"seeds.example", "plain.example", "gone.example"}) {
		t.Fatalf("looked up %v; IP literals must not be looked up", asked)
	}
}
