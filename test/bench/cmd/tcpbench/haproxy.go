package main

import (
	"fmt"
	"strings"
)

// haproxyListen is one `listen` section: a bind address and the one
// backend server behind it.
type haproxyListen struct {
	Name, Bind, Server string
}

// haproxyConfig renders the reference proxy: one HAProxy process in
// `mode tcp`, with as many threads as the machine has cores (the agents'
// Go runtimes use every core too), one listen section per service, and
// timeouts of the same order as loadmesh's (connect 5 s, idle 60 s).
// maxconn leaves room for the idle-connection test; HAProxy derives its
// file-descriptor limit from it. No health check: the backend is local
// and always up, and a check would add connections to the figures.
func haproxyConfig(threads, maxconn int, ls []haproxyListen) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn %d
    nbthread %d
defaults
    mode tcp
    maxconn %d
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout client-fin 10s
    timeout server-fin 10s
`, maxconn, max(threads, 1), maxconn)
	for _, l := range ls {
		fmt.Fprintf(&b, "listen %s\n    bind %s\n    server %s %s\n", l.Name, l.Bind, l.Name, l.Server)
	}
	return b.String()
}
