package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// NodeHeader names the loadmesh node whose backend served a response.
const NodeHeader = "X-Loadmesh-Node"

// Run sends the load that cfg describes and returns the report. When
// progress is not nil a progress bar is drawn on it (meant for a
// terminal). Cancelling ctx stops sending; the requests in flight finish
// (within cfg.Timeout) and the report covers everything sent, with
// Interrupted set. Run returns an error only for an invalid cfg.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tr := newTransport(cfg)
	defer tr.base.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// Report what the target answers, redirects included.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	mw := cfg.maxWorkers()
	workers := min(cfg.Workers, mw)
	var pacer vegeta.Pacer
	maxReq := uint64(cfg.MaxRequests)
	expected := 0.0
	if cfg.Rate == 0 {
		// Closed loop: every worker sends its next request as soon as
		// the previous one is answered.
		workers = mw
		pacer = boundedPacer{Pacer: vegeta.ConstantPacer{}, max: maxReq}
	} else {
		rp := newRampPacer(cfg.Ramp, cfg.Rate, maxReq)
		pacer = rp
		expected = min(float64(maxReq), rp.hits(cfg.Duration))
	}
	attacker := vegeta.NewAttacker(
		vegeta.Client(client),
		vegeta.Workers(uint64(workers)),
		vegeta.MaxWorkers(uint64(mw)),
		vegeta.MaxBody(0), // bodies are counted and discarded, never kept
	)
	target := vegeta.Target{Method: cfg.Method, URL: cfg.URL, Body: cfg.Body, Header: cfg.Header}

	agg := newAggregator()
	var wg sync.WaitGroup
	done := make(chan struct{})
	var interrupted atomic.Bool
	wg.Go(func() {
		select {
		case <-ctx.Done():
			interrupted.Store(true)
			attacker.Stop()
		case <-done:
		}
	})
	start := time.Now()
	if progress != nil {
		wg.Go(func() { drawProgress(progress, cfg.Duration, start, agg, done) })
	}
	for res := range attacker.Attack(vegeta.NewStaticTargeter(target), pacer, cfg.Duration, "") {
		agg.add(res, tr.kindOf(res.Seq))
	}
	close(done)
	wg.Wait()

	rep := agg.report(cfg, tr.bytesIn.Load())
	rep.Interrupted = interrupted.Load()
	if expected > 0 {
		rep.ExpectedRequests = int64(expected)
		if !rep.Interrupted && float64(rep.Requests) < 0.95*expected {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf(
				"sent %d of the %d requests due: the generator fell behind, all %d workers were busy (the target answers too slowly for this rate; raise --connections or --max-workers)",
				rep.Requests, rep.ExpectedRequests, mw))
		}
	}
	return rep, nil
}

// drawProgress draws a time-based bar with live counts until done.
func drawProgress(w io.Writer, d time.Duration, start time.Time, agg *aggregator, done <-chan struct{}) {
	bar := progressbar.NewOptions64(d.Milliseconds(),
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetDescription("starting"),
	)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		n, ok := agg.sent.Load(), agg.okCount.Load()
		bar.Describe(fmt.Sprintf("%d sent, %d ok, %d failed", n, ok, n-ok))
		_ = bar.Set64(min(time.Since(start).Milliseconds(), d.Milliseconds()))
		select {
		case <-done:
			_ = bar.Finish()
			fmt.Fprintln(w)
			return
		case <-tick.C:
		}
	}
}

// transport bounds connections, times each request out (body included)
// and records why a request failed, keyed by vegeta's sequence number
// (the X-Vegeta-Seq header vegeta sets on every request).
type transport struct {
	base    *http.Transport
	timeout time.Duration
	bytesIn atomic.Uint64
	kinds   sync.Map // seq (uint64) → error kind
}

func newTransport(cfg Config) *transport {
	d := &net.Dialer{Timeout: min(cfg.Timeout, 10*time.Second), KeepAlive: 30 * time.Second}
	base := &http.Transport{
		Proxy:               nil, // a load test measures the target, not a proxy
		DialContext:         d.DialContext,
		MaxConnsPerHost:     cfg.Connections,
		MaxIdleConnsPerHost: cfg.Connections,
		MaxIdleConns:        cfg.Connections,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: min(cfg.Timeout, 10*time.Second),
		DisableCompression:  true,
		ForceAttemptHTTP2:   cfg.HTTP2,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: cfg.Insecure}, //nolint:gosec // operator's choice (--insecure)
	}
	if !cfg.HTTP2 {
		// A non-nil empty map turns HTTP/2 off.
		base.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &transport{base: base, timeout: cfg.Timeout}
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		t.note(req, err)
		return nil, err
	}
	resp.Body = &countingBody{rc: resp.Body, cancel: cancel, t: t, req: req}
	return resp, nil
}

func (t *transport) note(req *http.Request, err error) {
	if seq, perr := strconv.ParseUint(req.Header.Get("X-Vegeta-Seq"), 10, 64); perr == nil {
		t.kinds.Store(seq, classify(err))
	}
}

// kindOf returns and forgets the kind noted for seq, or "".
func (t *transport) kindOf(seq uint64) string {
	if v, ok := t.kinds.LoadAndDelete(seq); ok {
		return v.(string)
	}
	return ""
}

// countingBody counts the bytes read, notes a read error, and ends the
// request's timeout when closed.
type countingBody struct {
	rc     io.ReadCloser
	cancel context.CancelFunc
	t      *transport
	req    *http.Request
	failed bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.t.bytesIn.Add(uint64(n))
	if err != nil && err != io.EOF && !b.failed {
		b.failed = true
		b.t.note(b.req, err)
	}
	return n, err
}

func (b *countingBody) Close() error {
	err := b.rc.Close()
	b.cancel()
	return err
}

// Error kinds other than HTTP statuses ("http_503").
const (
	KindTimeout   = "timeout"
	KindRefused   = "connection_refused"
	KindReset     = "connection_reset"
	KindClosed    = "connection_closed"
	KindDNS       = "dns"
	KindTLS       = "tls"
	KindOther     = "other"
	kindHTTPPrefx = "http_"
)

// classify names the kind of a transport error.
func classify(err error) string {
	var ne net.Error
	var dns *net.DNSError
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var al tls.AlertError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return KindTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		return KindReset
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return KindClosed
	case errors.As(err, &dns):
		return KindDNS
	case errors.As(err, &rh) || errors.As(err, &cv) || errors.As(err, &ua) ||
		errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &al):
		return KindTLS
	}
	return classifyMessage(err.Error())
}

// classifyMessage classifies an error known only by its message (vegeta
// hands results over with the error as a string).
func classifyMessage(msg string) string {
	switch {
	case strings.Contains(msg, "timeout") || strings.Contains(msg, "deadline exceeded"):
		return KindTimeout
	case strings.Contains(msg, "connection refused"):
		return KindRefused
	case strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe"):
		return KindReset
	case strings.HasSuffix(msg, "EOF") || strings.Contains(msg, "server closed"):
		return KindClosed
	case strings.Contains(msg, "no such host"):
		return KindDNS
	case strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:"):
		return KindTLS
	}
	return KindOther
}
