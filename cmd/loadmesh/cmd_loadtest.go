package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/loadtest"
)

func newLoadtestCmd() *cobra.Command {
	cfg := loadtest.DefaultConfig()
	var (
		ramp, body string
		headers    []string
		asJSON     bool
		progress   bool
	)
	cmd := &cobra.Command{
		Use:   "loadtest URL",
		Short: "Send HTTP load at a constant (or ramped) rate and report latency, errors and spread over nodes",
		Long: `Send requests to URL at --rate requests/s for --duration, whatever the target's
latency (an open loop, paced by the vegeta library: a slow target gets more
requests in flight, up to --max-workers, not fewer requests), then report
requests and rate achieved, latency percentiles and a histogram, errors by
kind, and how the answers were spread over loadmesh nodes (X-Loadmesh-Node).

--ramp shapes the start:
  --ramp 30s              rise linearly from 0 to --rate over 30 s, then hold
  --ramp 100:30s,500:1m   stages RATE:DURATION, each moving linearly from the
                          previous rate (0 at first) to RATE; the last rate
                          holds until --duration (default: the stages' total);
                          500:2m,500:5m is a plateau, 500:0s a step

--rate 0 sends as fast as --max-workers concurrent requests allow (a closed
loop, for throughput rather than latency at a given rate).

Every run is bounded by --duration and --max-requests; Ctrl-C stops early and
still prints the report. A progress bar is drawn on stderr when it is a
terminal (or with --progress); --json prints one JSON document on stdout.`,
		Example: `  loadmesh loadtest http://127.0.0.1:8080/ --rate 200 --duration 30s
  loadmesh loadtest http://127.0.0.1:8080/api --rate 1000 --duration 5m --ramp 1m --connections 200
  loadmesh loadtest https://mesh.example:8443/ --ramp 100:30s,500:1m,500:5m --http2 --json > run.json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.URL = args[0]
			var errs []error
			stages, staged, err := loadtest.ParseRamp(ramp, cfg.Rate)
			if err != nil {
				errs = append(errs, err)
			}
			if staged {
				if cmd.Flags().Changed("rate") {
					errs = append(errs, errors.New("--rate and a staged --ramp both set the rate: give one"))
				}
				peak := 0.0
				for _, s := range stages {
					peak = max(peak, s.Rate)
				}
				cfg.Rate = peak
				if !cmd.Flags().Changed("duration") {
					cfg.Duration = loadtest.RampDuration(stages)
				}
			}
			cfg.Ramp = stages
			cfg.Header = http.Header{}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if k = strings.TrimSpace(k); !ok || k == "" || strings.ContainsAny(k, " \t") {
					errs = append(errs, fmt.Errorf("bad --header %q: want \"Name: value\"", h))
					continue
				}
				cfg.Header.Add(k, strings.TrimSpace(v))
			}
			if b, err := readBody(body); err != nil {
				errs = append(errs, err)
			} else {
				cfg.Body = b
			}
			if len(errs) == 0 {
				errs = append(errs, cfg.Validate())
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			stderr := cmd.ErrOrStderr()
			fmt.Fprintf(stderr, "loadtest: %s %s at %s\n", cfg.Method, cfg.URL, describeLoad(cfg))
			var bar io.Writer
			if progress || isTerminal(stderr) {
				bar = stderr
			}
			rep, err := loadtest.Run(ctx, cfg, bar)
			if err != nil {
				return err
			}
			if asJSON {
				return rep.WriteJSON(cmd.OutOrStdout())
			}
			return rep.WriteText(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.Float64Var(&cfg.Rate, "rate", cfg.Rate, "requests per second (0: as fast as --max-workers allow)")
	f.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of the run, ramp included")
	f.StringVar(&ramp, "ramp", "", "ramp up: a duration (30s) or stages RATE:DURATION,... (100:30s,500:1m)")
	f.IntVar(&cfg.Connections, "connections", cfg.Connections, "most connections to the target")
	f.IntVar(&cfg.Workers, "workers", cfg.Workers, "workers started at once (more are added when all are busy)")
	f.IntVar(&cfg.MaxWorkers, "max-workers", 0, "most requests in flight (0: --connections)")
	f.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "limit for one request, body included")
	f.StringVarP(&cfg.Method, "method", "X", cfg.Method, "HTTP method")
	f.StringArrayVarP(&headers, "header", "H", nil, `request header "Name: value" (repeatable; "Host: x" sets the host)`)
	f.StringVarP(&body, "body", "d", "", "request body, or @FILE to read it from a file")
	f.BoolVar(&cfg.HTTP2, "http2", false, "use HTTP/2 with https:// targets")
	f.BoolVarP(&cfg.Insecure, "insecure", "k", false, "do not verify the target's TLS certificate")
	f.Int64Var(&cfg.MaxRequests, "max-requests", cfg.MaxRequests, "hard bound on requests sent")
	f.BoolVar(&asJSON, "json", false, "print the report as one JSON document")
	f.BoolVar(&progress, "progress", false, "draw the progress bar on stderr even when it is not a terminal")
	return cmd
}

// describeLoad is the one line printed before a run starts, so the target
// and the load are clear before any request leaves.
func describeLoad(cfg loadtest.Config) string {
	var s string
	if cfg.Rate == 0 {
		s = fmt.Sprintf("full speed for %s", cfg.Duration)
	} else {
		s = fmt.Sprintf("%g req/s for %s", cfg.Rate, cfg.Duration)
		if len(cfg.Ramp) > 0 {
			s += fmt.Sprintf(" (ramp over %s)", loadtest.RampDuration(cfg.Ramp))
		}
	}
	return s + fmt.Sprintf(", at most %d requests", cfg.MaxRequests)
}

// readBody reads --body: literal text, or @FILE.
func readBody(s string) ([]byte, error) {
	name, ok := strings.CutPrefix(s, "@")
	if !ok {
		return []byte(s), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("--body: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, loadtest.MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("--body: %w", err)
	}
	return b, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
