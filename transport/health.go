package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// HealthConfig tunes the active health check of a node's own backend.
type HealthConfig struct {
	// URL is checked with GET; a 2xx or 3xx answer is a pass. A
	// tcp://HOST:PORT URL is checked with a TCP connect instead: an
	// accepted connection (closed at once) is a pass.
	URL string
	// Interval between checks. Default 1s.
	Interval time.Duration
	// Timeout of one check; must be below Interval. Default 500ms.
	Timeout time.Duration
	// Rise consecutive passes make an unhealthy backend healthy. Default 2.
	Rise int
	// Fall consecutive failures make a healthy backend unhealthy. Default 2.
	Fall int
	// SendProxy makes a tcp:// check send a PROXY protocol v2 LOCAL
	// header (a health check's, carrying no client address) before it
	// closes, for backends that expect one on every connection.
	SendProxy bool
}

// DefaultHealthConfig returns the defaults, without a URL.
func DefaultHealthConfig() HealthConfig {
	return HealthConfig{Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 2}
}

// Validate reports every problem with c.
func (c HealthConfig) Validate() error {
	var errs []error
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "tcp") || u.Host == "" {
		errs = append(errs, fmt.Errorf("health check URL %q is not an http(s):// or tcp:// URL", c.URL))
	} else if u.Scheme == "tcp" && (u.Port() == "" || (u.Path != "" && u.Path != "/")) {
		errs = append(errs, fmt.Errorf("health check URL %q: a tcp:// check needs host:port and nothing else", c.URL))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("health interval %s must be positive", c.Interval))
	}
	if c.Timeout <= 0 || c.Timeout >= c.Interval {
		errs = append(errs, fmt.Errorf("health timeout %s must be positive and below the interval %s", c.Timeout, c.Interval))
	}
	if c.Rise < 1 || c.Fall < 1 {
		errs = append(errs, fmt.Errorf("health rise %d and fall %d must be at least 1", c.Rise, c.Fall))
	}
	return errors.Join(errs...)
}

// HealthChecker actively checks the local backend. The backend starts
// healthy (so a node serves as soon as it starts) until Fall checks fail.
type HealthChecker struct {
	cfg HealthConfig // URL; the rest is in live
	// live holds the settings in force (Reconfigure).
	live     atomic.Pointer[HealthConfig]
	client   *http.Client
	log      *slog.Logger
	onChange func(healthy bool)

	healthy atomic.Bool
	// run state, owned by the loop goroutine
	passes, fails int

	stop chan struct{}
	// wake tells the loop that the settings changed (buffered 1).
	wake chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// NewHealthChecker validates cfg. onChange (optional) is called from the
// checker's goroutine whenever health flips.
func NewHealthChecker(cfg HealthConfig, log *slog.Logger, onChange func(healthy bool)) (*HealthChecker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &HealthChecker{
		cfg: cfg,
		// Each check's context carries its timeout (live.Timeout).
		client:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}},
		log:      log.With("component", "transport"),
		onChange: onChange,
		stop:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
	}
	h.live.Store(&cfg)
	h.healthy.Store(true)
	return h, nil
}

// Reconfigure replaces the interval, timeout, rise and fall; the URL
// stays. The next check comes one new interval from now; a check under
// way keeps its timeout. Safe for concurrent use.
func (h *HealthChecker) Reconfigure(cfg HealthConfig) error {
	cfg.URL = h.cfg.URL
	if err := cfg.Validate(); err != nil {
		return err
	}
	h.live.Store(&cfg)
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return nil
}

// Healthy reports the backend's current health.
func (h *HealthChecker) Healthy() bool { return h.healthy.Load() }

// Start runs the first check at once and then one per interval.
func (h *HealthChecker) Start() {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		interval := h.live.Load().Interval
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			h.check()
			for waiting := true; waiting; {
				select {
				case <-h.stop:
					return
				case <-t.C:
					waiting = false
				case <-h.wake:
					if cur := h.live.Load().Interval; cur != interval {
						interval = cur
						t.Reset(interval)
					}
				}
			}
		}
	}()
}

// Shutdown stops the checks and waits for the loop. Idempotent.
func (h *HealthChecker) Shutdown() {
	h.once.Do(func() { close(h.stop) })
	h.wg.Wait()
	h.client.CloseIdleConnections()
}

func (h *HealthChecker) check() {
	cfg := h.live.Load()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := h.probe(ctx)
	if err == nil {
		h.passes, h.fails = h.passes+1, 0
	} else {
		h.passes, h.fails = 0, h.fails+1
	}
	was := h.healthy.Load()
	switch {
	case was && h.fails >= cfg.Fall:
		h.healthy.Store(false)
		h.log.Warn("backend is unhealthy", "url", h.cfg.URL, "error", err, "failures", h.fails)
	case !was && h.passes >= cfg.Rise:
		h.healthy.Store(true)
		h.log.Info("backend is healthy again", "url", h.cfg.URL)
	default:
		return
	}
	if h.onChange != nil {
		h.onChange(h.healthy.Load())
	}
}

func (h *HealthChecker) probe(ctx context.Context) error {
	if host, ok := strings.CutPrefix(h.cfg.URL, "tcp://"); ok {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", strings.TrimSuffix(host, "/"))
		if err != nil {
			return err
		}
		if h.cfg.SendProxy {
			if dl, ok := ctx.Deadline(); ok {
				conn.SetWriteDeadline(dl)
			}
			local := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
			if _, err := local.WriteTo(conn); err != nil {
				conn.Close()
				return err
			}
		}
		return conn.Close()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.cfg.URL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "loadmesh-health-check")
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
