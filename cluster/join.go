package cluster

import (
	"context"
	"net"
	"slices"
	"time"
)

// expandJoin turns the --join seeds into addresses to contact: a DNS name
// (a Kubernetes headless Service, a round-robin record) stands for every
// address it resolves to, so that one seed name reaches every server
// behind it. IP literals pass through; a name that does not resolve now is
// kept as given, for memberlist to try (and report) itself.
func (c *Cluster) expandJoin(ctx context.Context) []string {
	lookup := c.cfg.LookupHost
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	var out []string
	for _, seed := range c.cfg.Join {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			host, port = seed, "7946" // bare host: the default gossip port (ValidateJoinAddr)
		}
		if net.ParseIP(host) != nil {
			out = append(out, net.JoinHostPort(host, port))
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := lookup(lctx, host)
		cancel()
		if err != nil || len(addrs) == 0 {
			c.log.Warn("join seed does not resolve; trying it as given", "seed", seed, "error", err)
			out = append(out, seed)
			continue
		}
		slices.Sort(addrs)
		for _, a := range addrs {
			out = append(out, net.JoinHostPort(a, port))
		}
	}
	seen := make(map[string]bool, len(out))
	return slices.DeleteFunc(out, func(a string) bool {
		dup := seen[a]
		seen[a] = true
		return dup
	})
}
