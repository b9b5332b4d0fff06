//go:build unix

package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/test/retry"
)

// testRequest is a valid scale_out request.
func testRequest() Request {
	return Request{
		Version: RequestVersion, ID: "req-42", Kind: KindScaleOut,
		Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Zone: "a", Count: 2,
		Why: "test", Cluster: Cluster{Leader: "n1", Seeds: []string{"127.0.0.1:7946"}},
	}
}

// script writes an executable /bin/sh script to a new temporary directory
// and returns its path and the directory (also in $HOOKTEST_DIR for it).
func script(t *testing.T, body string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

// sleeps records the backoffs Run asks for without waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.d)
}

func testRunner(t *testing.T, dir string, sl *sleeps) *Runner {
	cfg := RunnerConfig{Env: []string{"HOOKTEST_DIR=" + dir}}
	if sl != nil {
		cfg.Sleep = sl.sleep
	}
	return NewRunner(cfg)
}

func commandHook(argv ...string) autoscale.Hook {
	return autoscale.Hook{Command: argv, Timeout: autoscale.Duration(10 * time.Second), Retries: 2,
		Backoff: autoscale.Duration(10 * time.Millisecond)}
}

func TestRunnerCommandSuccess(t *testing.T) {
	t.Parallel()
	path, dir := script(t, `cat > "$HOOKTEST_DIR/stdin"
echo "$LOADMESH_HOOK_KIND $LOADMESH_HOOK_ID $LOADMESH_HOOK_ATTEMPT" > "$HOOKTEST_DIR/env"
echo "  started local-a-1  "
echo "some noise" >&2
`)
	var seen []Attempt
	res := testRunner(t, dir, nil).Run(t.Context(), commandHook(path), testRequest(), func(a Attempt) { seen = append(seen, a) })
	if err := res.Err(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(res.Attempts) != 1 || len(seen) != 1 || seen[0].N != 1 {
		t.Fatalf("attempts %+v, onAttempt saw %+v; want one attempt numbered 1", res.Attempts, seen)
	}
	if got := res.Attempts[0].Output; got != "started local-a-1" {
		t.Errorf("Output %q, want the trimmed stdout %q", got, "started local-a-1")
	}
	if res.Attempts[0].Took <= 0 {
		t.Errorf("Took %s, want > 0", res.Attempts[0].Took)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env"))
	if got, want := strings.TrimSpace(string(env)), "scale_out req-42 1"; got != want {
		t.Errorf("hook environment LOADMESH_HOOK_KIND, _ID, _ATTEMPT = %q, want %q", got, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, "stdin"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadRequest(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("stdin of the hook: %v\n%s", err, b)
	}
	want := testRequest()
	want.Attempt = 1
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stdin request\n got %+v\nwant %+v", got, want)
	}
}

func TestRunnerCommandRetries(t *testing.T) {
	t.Parallel()
	path, dir := script(t, `cat > "$HOOKTEST_DIR/stdin.$LOADMESH_HOOK_ATTEMPT"
echo "attempt $LOADMESH_HOOK_ATTEMPT"
echo "first line of noise" >&2
echo "quota exceeded in zone a" >&2
echo "" >&2
exit 3
`)
	sl := &sleeps{}
	h := commandHook(path)
	h.Retries = 3
	h.Backoff = autoscale.Duration(100 * time.Millisecond)
	var seen []int
	res := testRunner(t, dir, sl).Run(t.Context(), h, testRequest(), func(a Attempt) { seen = append(seen, a.N) })

	if !slices.Equal(seen, []int{1, 2, 3, 4}) {
		t.Fatalf("onAttempt saw attempts %v, want 1 to 4", seen)
	}
	if len(res.Attempts) != 4 {
		t.Fatalf("%d attempts, want 4", len(res.Attempts))
	}
	for i, a := range res.Attempts {
		n := i + 1
		if want := "exit status 3: first line of noise | quota exceeded in zone a"; a.Err == nil || a.Err.Error() != want {
			t.Errorf("attempt %d: error %v, want %q", n, a.Err, want)
		}
		if want := "attempt " + strconv.Itoa(n); a.Output != want {
			t.Errorf("attempt %d: output %q, want %q", n, a.Output, want)
		}
		b, err := os.ReadFile(filepath.Join(dir, "stdin."+strconv.Itoa(n)))
		if err != nil {
			t.Fatalf("attempt %d: the hook saw no $LOADMESH_HOOK_ATTEMPT=%d: %v", n, n, err)
		}
		var req Request
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatalf("attempt %d: stdin: %v", n, err)
		}
		if req.Attempt != n || req.ID != "req-42" {
			t.Errorf("attempt %d: stdin has attempt %d, id %q; want %d, req-42", n, req.Attempt, req.ID, n)
		}
	}
	if err := res.Err(); err != res.Attempts[3].Err {
		t.Errorf("Result.Err %v, want the last attempt's", err)
	}
	// 100ms, 200ms, 400ms, each ±20 %.
	got := sl.got()
	if len(got) != 3 {
		t.Fatalf("backoffs %v, want 3", got)
	}
	for i, d := range got {
		base := time.Duration(100<<i) * time.Millisecond
		if d < base*8/10 || d > base*12/10 {
			t.Errorf("backoff %d: %s, want %s ±20%%", i+1, d, base)
		}
	}
}

func TestRunnerCommandSucceedsOnRetry(t *testing.T) {
	t.Parallel()
	path, dir := script(t, `[ "$LOADMESH_HOOK_ATTEMPT" = 2 ] && { echo done; exit 0; }
echo "not yet" >&2
exit 1
`)
	res := testRunner(t, dir, &sleeps{}).Run(t.Context(), commandHook(path), testRequest(), nil)
	if err := res.Err(); err != nil || len(res.Attempts) != 2 {
		t.Fatalf("Run: %d attempts, error %v; want success on the second", len(res.Attempts), err)
	}
	if a := res.Attempts[0]; a.Err == nil || a.Err.Error() != "exit status 1: not yet" {
		t.Errorf("first attempt: error %v, want \"exit status 1: not yet\"", a.Err)
	}
	if res.Attempts[1].Output != "done" {
		t.Errorf("second attempt: output %q, want done", res.Attempts[1].Output)
	}
}

func TestRunnerBackoffCappedAtAMinute(t *testing.T) {
	t.Parallel()
	sl := &sleeps{}
	h := autoscale.Hook{Command: []string{"/bin/sh", "-c", "exit 1"}, Timeout: autoscale.Duration(10 * time.Second),
		Retries: 4, Backoff: autoscale.Duration(20 * time.Second)}
	res := testRunner(t, t.TempDir(), sl).Run(t.Context(), h, testRequest(), nil)
	if len(res.Attempts) != 5 {
		t.Fatalf("%d attempts, want 5", len(res.Attempts))
	}
	got := sl.got()
	for i, d := range got {
		base := min(time.Duration(20<<i)*time.Second, time.Minute)
		if d < base*8/10 || d > min(base*12/10, time.Minute) {
			t.Errorf("backoff %d: %s, want %s ±20%% and at most 1m", i+1, d, base)
		}
	}
}

func TestRunnerCommandStartErrors(t *testing.T) {
	t.Parallel()
	notExec := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		hook autoscale.Hook
		want string
	}{
		{"missing path", commandHook("/nonexistent/provisioner"), "start: executable not found: /nonexistent/provisioner"},
		{"not on PATH", commandHook("no-such-provisioner-xyz"), "start: executable not found: no-such-provisioner-xyz"},
		{"not executable", commandHook(notExec), "start: permission denied: " + notExec},
		{"neither command nor url", autoscale.Hook{Retries: 1, Backoff: autoscale.Duration(10 * time.Millisecond)}, "hook has neither a command nor a url"},
		{"both", autoscale.Hook{Command: []string{"true"}, URL: "http://127.0.0.1:1/", Retries: 1}, "hook has both a command and a url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := testRunner(t, t.TempDir(), &sleeps{}).Run(t.Context(), tt.hook, testRequest(), nil)
			if len(res.Attempts) != 1+tt.hook.Retries {
				t.Errorf("%d attempts, want %d", len(res.Attempts), 1+tt.hook.Retries)
			}
			if err := res.Err(); err == nil || err.Error() != tt.want {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// alive reports whether pid is a running process (not a zombie).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no procfs: trust kill(0)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// readPID waits for the script to write a pid to file.
func readPID(t *testing.T, file string) int {
	t.Helper()
	var pid int
	retry.Run(t, func(r *retry.R) {
		b, err := os.ReadFile(file)
		r.Check(err)
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		r.Check(err)
	})
	return pid
}

func TestRunnerTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	// The grandchild keeps stdout open and would outlive a plain kill of
	// the script.
	path, dir := script(t, `sleep 60 &
echo $! > "$HOOKTEST_DIR/grandchild.tmp"
mv "$HOOKTEST_DIR/grandchild.tmp" "$HOOKTEST_DIR/grandchild"
wait
`)
	h := commandHook(path)
	h.Retries = 0
	h.Timeout = autoscale.Duration(500 * time.Millisecond)
	start := time.Now()
	res := testRunner(t, dir, nil).Run(t.Context(), h, testRequest(), nil)
	took := time.Since(start)
	pid := readPID(t, filepath.Join(dir, "grandchild"))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })

	if took > retry.Scale(10*time.Second) {
		t.Errorf("Run took %s with a 500ms timeout", took)
	}
	err := res.Err()
	if err == nil || err.Error() != "timed out after 500ms" || !errors.Is(err, ErrTimeout) {
		t.Errorf("error %v, want \"timed out after 500ms\" wrapping ErrTimeout", err)
	}
	retry.Run(t, func(r *retry.R) {
		if alive(pid) {
			r.Fatalf("grandchild sleep 60 (pid %d) still running after the timeout", pid)
		}
	})
}

func TestRunnerGrandchildHoldingStdoutCannotHang(t *testing.T) {
	t.Parallel()
	// The script succeeds at once but leaves a child holding its stdout.
	path, dir := script(t, `sleep 60 &
echo $! > "$HOOKTEST_DIR/grandchild.tmp"
mv "$HOOKTEST_DIR/grandchild.tmp" "$HOOKTEST_DIR/grandchild"
echo ok
`)
	h := commandHook(path)
	h.Timeout = autoscale.Duration(time.Minute)
	start := time.Now()
	res := testRunner(t, dir, nil).Run(t.Context(), h, testRequest(), nil)
	took := time.Since(start)
	pid := readPID(t, filepath.Join(dir, "grandchild"))
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err := res.Err(); err != nil || res.Attempts[0].Output != "ok" {
		t.Errorf("error %v, output %q; want success with output ok", err, res.Attempts[0].Output)
	}
	if took > retry.Scale(20*time.Second) {
		t.Errorf("Run took %s: held up by the grandchild", took)
	}
}

func TestRunnerOutputTruncated(t *testing.T) {
	t.Parallel()
	path, dir := script(t, `i=0
while [ $i -lt 200 ]; do
	echo "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
	i=$((i+1))
done
exit 2
`)
	h := commandHook(path)
	h.Retries = 0
	res := testRunner(t, dir, nil).Run(t.Context(), h, testRequest(), nil)
	a := res.Attempts[0]
	if len(a.Output) != MaxOutput || !strings.HasPrefix(a.Output, "0123456789") {
		t.Errorf("output is %d bytes starting %.20q, want the first %d", len(a.Output), a.Output, MaxOutput)
	}
	if a.Err == nil || a.Err.Error() != "exit status 2" {
		t.Errorf("error %v, want \"exit status 2\"", a.Err)
	}
}

func TestRunnerStderrTailBounded(t *testing.T) {
	t.Parallel()
	path, dir := script(t, `i=0
while [ $i -lt 100 ]; do
	echo "error line $i with some more words to make it long enough to matter and then some more and more and more and more and more" >&2
	i=$((i+1))
done
exit 1
`)
	h := commandHook(path)
	h.Retries = 0
	err := testRunner(t, dir, nil).Run(t.Context(), h, testRequest(), nil).Err()
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "exit status 1: …") || !strings.HasSuffix(msg, "error line 99 with some more words to make it long enough to matter and then some more and more and more and more and more") ||
		len(msg) > 400 || strings.Contains(msg, "\n") {
		t.Errorf("error is not one bounded line ending with the last stderr line: %q", msg)
	}
}

func TestRunnerCancelStopsRetries(t *testing.T) {
	t.Parallel()
	t.Run("between attempts", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		h := commandHook("/bin/sh", "-c", "exit 1")
		h.Retries = 5
		h.Backoff = autoscale.Duration(time.Minute)
		start := time.Now()
		// The real timer: Run must not wait out the minute.
		res := NewRunner(RunnerConfig{}).Run(ctx, h, testRequest(), func(a Attempt) {
			cancel()
		})
		if took := time.Since(start); took > retry.Scale(10*time.Second) {
			t.Errorf("Run took %s after cancel", took)
		}
		if len(res.Attempts) != 1 {
			t.Errorf("%d attempts; want 1: the cancel came during the first backoff", len(res.Attempts))
		}
	})
	t.Run("during a backoff", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		h := commandHook("/bin/sh", "-c", "exit 1")
		h.Retries = 5
		h.Backoff = autoscale.Duration(time.Minute)
		var n int
		res := NewRunner(RunnerConfig{Sleep: func(ctx context.Context, d time.Duration) error {
			n++
			if n == 2 {
				cancel()
				return ctx.Err()
			}
			return nil
		}}).Run(ctx, h, testRequest(), nil)
		if len(res.Attempts) != 2 {
			t.Errorf("%d attempts, want 2: cancelled in the second backoff", len(res.Attempts))
		}
	})
	t.Run("during an attempt", func(t *testing.T) {
		t.Parallel()
		path, dir := script(t, `echo $$ > "$HOOKTEST_DIR/pid.tmp"
mv "$HOOKTEST_DIR/pid.tmp" "$HOOKTEST_DIR/pid"
sleep 60
`)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		h := commandHook(path)
		h.Timeout = autoscale.Duration(time.Minute)
		done := make(chan Result)
		go func() { done <- testRunner(t, dir, nil).Run(ctx, h, testRequest(), nil) }()
		pid := readPID(t, filepath.Join(dir, "pid"))
		cancel()
		var res Result
		select {
		case res = <-done:
		case <-time.After(retry.Scale(10 * time.Second)):
			t.Fatal("Run still running 10s after cancel")
		}
		if len(res.Attempts) != 1 {
			t.Errorf("%d attempts, want 1", len(res.Attempts))
		}
		if err := res.Err(); !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "interrupted") {
			t.Errorf("error %v, want interrupted: context canceled", err)
		}
		if alive(pid) {
			t.Errorf("hook (pid %d) still running after cancel", pid)
		}
	})
	t.Run("before the first attempt", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		res := NewRunner(RunnerConfig{}).Run(ctx, commandHook("/bin/sh", "-c", "exit 0"), testRequest(), nil)
		if len(res.Attempts) != 0 || !errors.Is(res.Err(), context.Canceled) {
			t.Errorf("attempts %+v, error %v; want none and context.Canceled", res.Attempts, res.Err())
		}
	})
}

// webhook is a test server that records what it receives and answers with
// the status and body answer returns for the attempt.
type webhook struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []webhookCall
}

type webhookCall struct {
	method, path, contentType, hook, key, ua string
	req                                      Request
	err                                      error
}

func newWebhook(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, attempt int)) *webhook {
	wh := &webhook{}
	wh.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := webhookCall{method: r.Method, path: r.URL.Path, contentType: r.Header.Get("Content-Type"),
			hook: r.Header.Get("X-Loadmesh-Hook"), key: r.Header.Get("Idempotency-Key"), ua: r.Header.Get("User-Agent")}
		b, err := io.ReadAll(r.Body)
		if err == nil {
			err = json.Unmarshal(b, &c.req)
		}
		c.err = err
		wh.mu.Lock()
		wh.got = append(wh.got, c)
		n := len(wh.got)
		wh.mu.Unlock()
		answer(w, r, n)
	}))
	t.Cleanup(wh.srv.Close)
	return wh
}

func (wh *webhook) calls() []webhookCall {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	return slices.Clone(wh.got)
}

func webhookHook(u string) autoscale.Hook {
	return autoscale.Hook{URL: u, Timeout: autoscale.Duration(10 * time.Second), Retries: 2,
		Backoff: autoscale.Duration(10 * time.Millisecond)}
}

func TestRunnerWebhook(t *testing.T) {
	t.Parallel()
	t.Run("success", func(t *testing.T) {
		t.Parallel()
		wh := newWebhook(t, func(w http.ResponseWriter, r *http.Request, n int) {
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, "  accepted\n")
		})
		res := NewRunner(RunnerConfig{}).Run(t.Context(), webhookHook(wh.srv.URL+"/hooks/loadmesh?token=x"), testRequest(), nil)
		if err := res.Err(); err != nil || res.Attempts[0].Output != "accepted" {
			t.Fatalf("error %v, output %q; want success with output accepted", err, res.Attempts[0].Output)
		}
		calls := wh.calls()
		if len(calls) != 1 {
			t.Fatalf("%d calls, want 1", len(calls))
		}
		c := calls[0]
		got := []string{c.method, c.path, c.contentType, c.hook, c.key, c.ua}
		want := []string{"POST", "/hooks/loadmesh", "application/json", "scale_out", "req-42", "loadmesh"}
		if !slices.Equal(got, want) {
			t.Errorf("method, path, Content-Type, X-Loadmesh-Hook, Idempotency-Key, User-Agent = %q, want %q", got, want)
		}
		wantReq := testRequest()
		wantReq.Attempt = 1
		if c.err != nil || fmt.Sprint(c.req) != fmt.Sprint(wantReq) {
			t.Errorf("body %+v (%v), want %+v", c.req, c.err, wantReq)
		}
	})
	t.Run("failure is retried", func(t *testing.T) {
		t.Parallel()
		wh := newWebhook(t, func(w http.ResponseWriter, r *http.Request, n int) {
			if n < 3 {
				http.Error(w, "overloaded, try later\nsecond line", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
		})
		var seen []int
		res := NewRunner(RunnerConfig{}).Run(t.Context(), webhookHook(wh.srv.URL), testRequest(), func(a Attempt) { seen = append(seen, a.N) })
		if err := res.Err(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if !slices.Equal(seen, []int{1, 2, 3}) {
			t.Errorf("attempts %v, want 1 2 3", seen)
		}
		for _, a := range res.Attempts[:2] {
			if a.Err == nil || a.Err.Error() != "HTTP 503: overloaded, try later" {
				t.Errorf("attempt %d: error %v, want \"HTTP 503: overloaded, try later\"", a.N, a.Err)
			}
		}
		for i, c := range wh.calls() {
			if c.req.Attempt != i+1 || c.key != "req-42" {
				t.Errorf("call %d: attempt %d, Idempotency-Key %q; want %d, req-42", i+1, c.req.Attempt, c.key, i+1)
			}
		}
	})
	t.Run("every attempt fails", func(t *testing.T) {
		t.Parallel()
		wh := newWebhook(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusBadGateway) })
		h := webhookHook(wh.srv.URL)
		h.Retries = 1
		res := NewRunner(RunnerConfig{}).Run(t.Context(), h, testRequest(), nil)
		if len(res.Attempts) != 2 || len(wh.calls()) != 2 {
			t.Errorf("%d attempts, %d calls; want 2", len(res.Attempts), len(wh.calls()))
		}
		if err := res.Err(); err == nil || err.Error() != "HTTP 502: Bad Gateway" {
			t.Errorf("error %v, want \"HTTP 502: Bad Gateway\"", err)
		}
	})
	t.Run("redirect not followed", func(t *testing.T) {
		t.Parallel()
		wh := newWebhook(t, func(w http.ResponseWriter, r *http.Request, n int) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		})
		h := webhookHook(wh.srv.URL)
		h.Retries = 0
		res := NewRunner(RunnerConfig{}).Run(t.Context(), h, testRequest(), nil)
		if err := res.Err(); err == nil || !strings.HasPrefix(err.Error(), "HTTP 302: ") || len(wh.calls()) != 1 {
			t.Errorf("error %v after %d calls, want HTTP 302 after 1", err, len(wh.calls()))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		wh := newWebhook(t, func(w http.ResponseWriter, r *http.Request, n int) { <-r.Context().Done() })
		h := webhookHook(wh.srv.URL)
		h.Retries = 1
		h.Timeout = autoscale.Duration(200 * time.Millisecond)
		res := NewRunner(RunnerConfig{}).Run(t.Context(), h, testRequest(), nil)
		if len(res.Attempts) != 2 {
			t.Errorf("%d attempts, want 2", len(res.Attempts))
		}
		if err := res.Err(); err == nil || err.Error() != "timed out after 200ms" {
			t.Errorf("error %v, want \"timed out after 200ms\"", err)
		}
	})
	t.Run("long body truncated", func(t *testing.T) {
		t.Parallel()
		wh := newWebhook(t, func(w http.ResponseWriter, r *http.Request, n int) {
			io.WriteString(w, strings.Repeat("y", 1<<20))
		})
		res := NewRunner(RunnerConfig{}).Run(t.Context(), webhookHook(wh.srv.URL), testRequest(), nil)
		if err := res.Err(); err != nil || len(res.Attempts[0].Output) != MaxOutput {
			t.Errorf("error %v, output %d bytes; want success and %d bytes", err, len(res.Attempts[0].Output), MaxOutput)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		u := srv.URL + "/?token=secret"
		srv.Close()
		h := webhookHook(u)
		h.Retries = 1
		res := NewRunner(RunnerConfig{}).Run(t.Context(), h, testRequest(), nil)
		err := res.Err()
		if len(res.Attempts) != 2 || err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("%d attempts, error %v; want 2 failing with connection refused", len(res.Attempts), err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error %q repeats the URL's query", err)
		}
	})
}
