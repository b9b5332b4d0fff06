package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/demo"
)

func newBackendCmd() *cobra.Command {
	var listen, name string
	var delay time.Duration
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Run the built-in demo/test backend",
		Long: `Run a small HTTP backend that answers any path with a short text naming
itself. ?size=N answers N bytes, ?sleep=D adds a delay, ?status=N sets the
status and ?echo=1 streams the request body back.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				name = listen
			}
			s, err := demo.Start(listen, name, delay)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backend %q listening on http://%s/\n", name, s.Addr())
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return s.Shutdown(shut)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9000", "address to listen on")
	cmd.Flags().StringVar(&name, "name", "", "name to answer with (default: the listen address)")
	cmd.Flags().DurationVar(&delay, "delay", 0, "delay before every answer, to simulate a slow service")
	return cmd
}
