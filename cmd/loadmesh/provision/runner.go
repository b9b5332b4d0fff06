package provision

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

// Attempt is the outcome of one try of a hook.
type Attempt struct {
	// N counts from 1.
	N int
	// Err is nil on success: exit status 0, or an HTTP 2xx.
	Err error
	// Output is the command's stdout or the webhook's response body,
	// trimmed and cut to MaxOutput bytes.
	Output string
	// Took is how long the attempt ran.
	Took time.Duration
}

// Result is the outcome of a hook run with all its retries.
type Result struct {
	// Attempts in order; the last one decides.
	Attempts []Attempt
}

// Err is the last attempt's error (nil on success).
func (r Result) Err() error {
	if len(r.Attempts) == 0 {
		return context.Canceled
	}
	return r.Attempts[len(r.Attempts)-1].Err
}

// MaxOutput bounds the output kept from one attempt.
const MaxOutput = 4096

// ErrTimeout is wrapped by the error of an attempt that ran out of its
// hook's timeout: "timed out after 30s".
var ErrTimeout = errors.New("timed out")

const (
	// maxBackoff caps the wait between attempts.
	maxBackoff = time.Minute
	// defaultTimeout applies to a hook that leaves its Timeout zero (one
	// not made by autoscale.ParseSpec).
	defaultTimeout = 30 * time.Second
	// waitDelay is how long a command's pipes stay open after it exited
	// (or was killed): a grandchild that inherited stdout cannot hold Run
	// for longer.
	waitDelay = 2 * time.Second
	// maxErrDetail bounds the stderr tail or body line in an error.
	maxErrDetail = 300
	// maxDrain is how much of a long webhook response is read (and
	// discarded) so that the connection can be reused.
	maxDrain = 64 << 10
)

// RunnerConfig holds a Runner's collaborators. The zero value is usable.
type RunnerConfig struct {
	// Client sends webhooks. Nil means a client of the Runner's own that
	// does not follow redirects (a 3xx answer is a failure).
	Client *http.Client
	// Logger receives one line per attempt (Info on success, Warn on
	// failure) with component=provision. Nil discards.
	Logger *slog.Logger
	// Env is added to every command's environment, after os.Environ()
	// and before the LOADMESH_HOOK_* variables.
	Env []string
	// Sleep waits d or until ctx is done, returning ctx.Err() in that
	// case. Nil means a timer; tests replace it to skip or record the
	// backoff.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Runner runs hooks. The zero value is not usable: use NewRunner. A
// Runner is safe for concurrent use; it keeps no state between runs.
type Runner struct {
	client *http.Client
	log    *slog.Logger
	env    []string
	sleep  func(context.Context, time.Duration) error
}

// NewRunner returns a Runner using cfg's collaborators.
func NewRunner(cfg RunnerConfig) *Runner {
	r := &Runner{client: cfg.Client, log: cfg.Logger, env: cfg.Env, sleep: cfg.Sleep}
	if r.client == nil {
		r.client = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "provision")
	if r.sleep == nil {
		r.sleep = sleepCtx
	}
	return r
}

// Run runs hook h for req: one attempt, then up to h.Retries more after
// h.Backoff (2s when zero), doubling (with jitter, capped at a minute). Each
// attempt is bounded by h.Timeout. onAttempt (may be nil) is called after
// every attempt, before any backoff. Run stops early when ctx ends.
//
// Every attempt sends req with Attempt set to its number (and Version
// set to RequestVersion when zero). Run blocks until the last attempt has
// finished, its command's process group killed if it ran out of time.
func (r *Runner) Run(ctx context.Context, h autoscale.Hook, req Request, onAttempt func(Attempt)) Result {
	var res Result
	retries := max(h.Retries, 0)
	backoff := h.FirstBackoff()
	for n := 1; n <= 1+retries; n++ {
		if ctx.Err() != nil {
			break
		}
		a := r.attempt(ctx, h, req, n)
		res.Attempts = append(res.Attempts, a)
		if a.Err == nil {
			r.log.Info("hook succeeded", "hook", req.Kind, "id", req.ID, "attempt", n, "duration", a.Took)
		} else {
			r.log.Warn("hook failed", "hook", req.Kind, "id", req.ID, "attempt", n, "of", 1+retries,
				"duration", a.Took, "error", a.Err)
		}
		if onAttempt != nil {
			onAttempt(a)
		}
		if a.Err == nil || n > retries {
			break
		}
		if err := r.sleep(ctx, jitter(backoff)); err != nil {
			break
		}
		backoff = min(2*backoff, maxBackoff)
	}
	return res
}

// jitter spreads d by ±20 %, never beyond maxBackoff.
func jitter(d time.Duration) time.Duration {
	f := 0.8 + 0.4*rand.Float64()
	return min(time.Duration(float64(d)*f), maxBackoff)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attempt makes try n of h.
func (r *Runner) attempt(ctx context.Context, h autoscale.Hook, req Request, n int) Attempt {
	start := time.Now()
	req.Attempt = n
	if req.Version == 0 {
		req.Version = RequestVersion
	}
	timeout := h.Timeout.D()
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	a := Attempt{N: n}
	body, err := json.Marshal(req)
	switch {
	case err != nil:
		a.Err = fmt.Errorf("encode request: %w", err)
	case len(h.Command) > 0 && h.URL != "":
		a.Err = errors.New("hook has both a command and a url")
	case len(h.Command) > 0:
		a.Output, a.Err = r.runCommand(ctx, h.Command, timeout, req, body)
	case h.URL != "":
		a.Output, a.Err = r.postWebhook(ctx, h.URL, timeout, req, body)
	default:
		a.Err = errors.New("hook has neither a command nor a url")
	}
	a.Took = time.Since(start)
	return a
}

// runCommand runs argv once with body on stdin. The command gets a
// process group of its own, killed as a whole when the attempt times out
// or ctx ends, so that a shell script's children die with it.
func (r *Runner) runCommand(ctx context.Context, argv []string, timeout time.Duration, req Request, body []byte) (string, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(actx, argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(body)
	stdout := &headBuffer{max: MaxOutput}
	stderr := &tailBuffer{max: 4 * maxErrDetail}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(), r.env...)
	cmd.Env = append(cmd.Env,
		"LOADMESH_HOOK_KIND="+req.Kind,
		"LOADMESH_HOOK_ID="+req.ID,
		"LOADMESH_HOOK_ATTEMPT="+strconv.Itoa(req.Attempt))
	cmd.SysProcAttr = hookProcAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process) }
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		return "", startError(argv[0], err)
	}
	err := cmd.Wait()
	out := trimOutput(stdout.Bytes())
	switch {
	case errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return out, fmt.Errorf("%w after %s", ErrTimeout, timeout)
	case ctx.Err() != nil:
		return out, fmt.Errorf("interrupted: %w", ctx.Err())
	case errors.Is(err, exec.ErrWaitDelay):
		// It exited 0, but something it started kept stdout or stderr
		// open; the hook's own verdict stands.
		r.log.Debug("hook exited but its output stayed open", "hook", req.Kind, "id", req.ID)
		return out, nil
	case err != nil:
		msg := err.Error()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			msg = ee.ProcessState.String()
		}
		if tail := errTail(stderr.Bytes()); tail != "" {
			msg += ": " + tail
		}
		return out, errors.New(msg)
	}
	return out, nil
}

// startError makes a failure to start argv0 one short line.
func startError(argv0 string, err error) error {
	switch {
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("start: executable not found: %s", argv0)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("start: permission denied: %s", argv0)
	}
	return fmt.Errorf("start: %w", err)
}

// postWebhook POSTs body to u once.
func (r *Runner) postWebhook(ctx context.Context, u string, timeout time.Duration, req Request, body []byte) (string, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(actx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("webhook url: %w", unwrapURLError(err))
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "loadmesh")
	hreq.Header.Set("X-Loadmesh-Hook", req.Kind)
	hreq.Header.Set("Idempotency-Key", req.ID)
	resp, err := r.client.Do(hreq)
	if err == nil {
		defer resp.Body.Close()
		var b []byte
		b, err = io.ReadAll(io.LimitReader(resp.Body, MaxOutput))
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
			out := trimOutput(b)
			if resp.StatusCode/100 != 2 {
				line := firstLine(out)
				if line == "" {
					line = http.StatusText(resp.StatusCode)
				}
				return out, fmt.Errorf("HTTP %d: %s", resp.StatusCode, line)
			}
			return out, nil
		}
	}
	switch {
	case errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return "", fmt.Errorf("%w after %s", ErrTimeout, timeout)
	case ctx.Err() != nil:
		return "", fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return "", fmt.Errorf("post: %w", unwrapURLError(err))
}

// unwrapURLError drops net/url's "Post \"https://...\":" prefix, which
// would repeat the hook URL (and any token in its query) in every error.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// trimOutput trims b and cuts it to MaxOutput bytes on a rune boundary.
func trimOutput(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) <= MaxOutput {
		return s
	}
	// A rune cut in two at the end becomes invalid UTF-8 and is dropped.
	return strings.ToValidUTF8(s[:MaxOutput], "")
}

// firstLine returns s's first line, at most maxErrDetail bytes.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	if len(s) > maxErrDetail {
		s = strings.ToValidUTF8(s[:maxErrDetail], "") + "…"
	}
	return s
}

// errTail makes the end of a command's stderr one line for an error: its
// last non-empty lines joined with " | ", at most maxErrDetail bytes.
func errTail(b []byte) string {
	var lines []string
	for l := range strings.Lines(string(b)) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	s := strings.Join(lines, " | ")
	if len(s) > maxErrDetail {
		s = "…" + strings.ToValidUTF8(s[len(s)-maxErrDetail:], "")
	}
	return s
}

// headBuffer keeps the first max bytes written to it and discards the
// rest, so that a chatty hook cannot grow the agent's memory.
type headBuffer struct {
	max int
	buf []byte
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headBuffer) Bytes() []byte { return h.buf }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) Bytes() []byte { return t.buf }
