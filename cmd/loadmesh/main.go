// Command loadmesh is the loadmesh agent and its command-line tools.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "loadmesh:", oneLine(err))
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		os.Exit(code)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "loadmesh",
		Short: "A gossip-based, peer-to-peer load-distribution mesh",
		Long: `loadmesh spreads requests over servers without a central load balancer.
Every server runs one agent; agents find each other by gossip, elect a Raft
leader that holds the capacity plan, and forward requests to each other.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newAgentCmd(), newBackendCmd(), newStatusCmd(), newMembersCmd(), newKeygenCmd(), newTLSCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the loadmesh version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "loadmesh", version)
		},
	}
}

// oneLine keeps an error to one line for the terminal: the first line of
// each joined error, separated by "; ".
func oneLine(err error) string {
	var parts []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		parts = append(parts, e.Error())
	}
	walk(err)
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += "; "
		}
		for j := 0; j < len(p); j++ {
			if p[j] == '\n' {
				p = p[:j]
				break
			}
		}
		out += p
	}
	return out
}
