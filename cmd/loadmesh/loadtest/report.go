package loadtest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Report is the outcome of a run. Its JSON form (--json) is a stable,
// documented schema: latencies are in seconds, ratios are 0..1.
type Report struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	// Load is the load asked for.
	Load LoadSpec `json:"load"`
	// Interrupted is set when the run was stopped before its end.
	Interrupted bool `json:"interrupted"`
	// ExpectedRequests is what the rate and duration call for (0 with
	// rate 0).
	ExpectedRequests int64 `json:"expected_requests"`
	// Requests is the number sent; Succeeded got a 1xx–3xx answer.
	Requests  int64 `json:"requests"`
	Succeeded int64 `json:"succeeded"`
	// DurationSeconds is from the first request sent to the last;
	// WaitSeconds from then to the last answer.
	DurationSeconds float64 `json:"duration_seconds"`
	WaitSeconds     float64 `json:"wait_seconds"`
	// Rate is the requests sent per second; Throughput the successful
	// ones per second, waiting time included.
	Rate         float64 `json:"rate"`
	Throughput   float64 `json:"throughput"`
	SuccessRatio float64 `json:"success_ratio"`
	BytesIn      uint64  `json:"bytes_in"`
	BytesOut     uint64  `json:"bytes_out"`
	// Latency summarises every request, failed ones included (a timeout
	// counts its full wait).
	Latency   LatencySummary `json:"latency_seconds"`
	Histogram []Bucket       `json:"histogram"`
	// StatusCodes counts answers by HTTP status ("0" for no answer).
	StatusCodes map[string]int64 `json:"status_codes"`
	// Errors groups failed requests by kind, most frequent first.
	Errors []ErrorKind `json:"errors"`
	// Nodes is how requests were spread over X-Loadmesh-Node values,
	// most requests first: "(none)" for answers without the header and
	// "(no response)" for requests that got no answer.
	Nodes    []NodeShare `json:"nodes"`
	Warnings []string    `json:"warnings,omitempty"`
}

// LoadSpec is the load asked for.
type LoadSpec struct {
	Rate            float64 `json:"rate"`
	DurationSeconds float64 `json:"duration_seconds"`
	Ramp            []Step  `json:"ramp,omitempty"`
	Connections     int     `json:"connections"`
	MaxWorkers      int     `json:"max_workers"`
	TimeoutSeconds  float64 `json:"timeout_seconds"`
	HTTP2           bool    `json:"http2"`
	Description     string  `json:"description"`
}

// Step is a ramp stage in the JSON report.
type Step struct {
	Rate            float64 `json:"rate"`
	DurationSeconds float64 `json:"duration_seconds"`
}

// LatencySummary holds latency figures in seconds.
type LatencySummary struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// Bucket counts requests whose latency is in [From, To) seconds; To is
// null for the last, open bucket.
type Bucket struct {
	From  float64  `json:"from"`
	To    *float64 `json:"to"`
	Count int64    `json:"count"`
}

// ErrorKind is one kind of failure: "http_<code>" for an HTTP status of
// 400 or more, or timeout, connection_refused, connection_reset,
// connection_closed, dns, tls, other.
type ErrorKind struct {
	Kind        string `json:"kind"`
	Description string `json:"description"`
	Count       int64  `json:"count"`
	// Example is one error message of this kind (none for HTTP statuses).
	Example string `json:"example,omitempty"`
}

// NodeShare is one X-Loadmesh-Node value's part of the requests.
type NodeShare struct {
	Node     string  `json:"node"`
	Requests int64   `json:"requests"`
	Share    float64 `json:"share"`
	// Errors counts this node's answers of 400 or more.
	Errors      int64   `json:"errors"`
	MeanLatency float64 `json:"mean_latency_seconds"`
}

// Node names for requests without a node.
const (
	NodeNone       = "(none)"
	NodeNoResponse = "(no response)"
	// nodeOther takes every node past maxNodes, so a target that sends
	// a different header value every time cannot grow the report.
	nodeOther = "(other)"
	maxNodes  = 1000
)

// bucketBounds are the histogram's upper bounds: a 1-2-5 series (about
// evenly spaced on a log scale) from 100 µs to 50 s.
var bucketBounds = func() []time.Duration {
	var b []time.Duration
	for d := 100 * time.Microsecond; d <= 50*time.Second; d *= 10 {
		b = append(b, d, 2*d, 5*d)
	}
	return b
}()

// aggregator folds results in as they arrive. add runs on one goroutine;
// sent and okCount may be read concurrently (progress).
type aggregator struct {
	sent, okCount atomic.Int64
	lat           vegeta.LatencyMetrics
	hist          []int64
	codes         map[string]int64
	errs          map[string]*ErrorKind
	nodes         map[string]*nodeAgg
	first, last   time.Time
	end           time.Time
	bytesOut      uint64
}

type nodeAgg struct {
	n, errs int64
	lat     time.Duration
}

func newAggregator() *aggregator {
	return &aggregator{
		hist:  make([]int64, len(bucketBounds)+1),
		codes: map[string]int64{},
		errs:  map[string]*ErrorKind{},
		nodes: map[string]*nodeAgg{},
	}
}

// add folds in one result; kind is the transport's classification of its
// error, if it noted one.
func (a *aggregator) add(r *vegeta.Result, kind string) {
	a.sent.Add(1)
	if a.first.IsZero() || r.Timestamp.Before(a.first) {
		a.first = r.Timestamp
	}
	if r.Timestamp.After(a.last) {
		a.last = r.Timestamp
	}
	if e := r.End(); e.After(a.end) {
		a.end = e
	}
	a.bytesOut += r.BytesOut
	a.lat.Add(r.Latency)
	i, _ := slices.BinarySearch(bucketBounds, r.Latency+1)
	a.hist[i]++
	a.codes[strconv.Itoa(int(r.Code))]++

	failed := r.Error != "" || r.Code == 0
	if !failed {
		a.okCount.Add(1)
	}
	if failed {
		var example string
		switch {
		case r.Code >= 400:
			kind = kindHTTPPrefx + strconv.Itoa(int(r.Code))
		case kind == "":
			kind = classifyMessage(r.Error)
			example = r.Error
		default:
			example = r.Error
		}
		e := a.errs[kind]
		if e == nil {
			e = &ErrorKind{Kind: kind, Description: describeKind(kind), Example: truncate(example, 200)}
			a.errs[kind] = e
		}
		e.Count++
	}

	node := NodeNoResponse
	if r.Code != 0 {
		node = NodeNone
		if r.Headers != nil {
			if v := r.Headers.Get(NodeHeader); v != "" {
				node = v
			}
		}
	}
	n := a.nodes[node]
	if n == nil {
		if len(a.nodes) >= maxNodes {
			node = nodeOther
			n = a.nodes[node]
		}
		if n == nil {
			n = &nodeAgg{}
			a.nodes[node] = n
		}
	}
	n.n++
	n.lat += r.Latency
	if r.Code >= 400 {
		n.errs++
	}
}

func (a *aggregator) report(cfg Config, bytesIn uint64) *Report {
	rep := &Report{
		Method: cfg.Method,
		URL:    cfg.URL,
		Load: LoadSpec{
			Rate:            cfg.Rate,
			DurationSeconds: cfg.Duration.Seconds(),
			Connections:     cfg.Connections,
			MaxWorkers:      cfg.maxWorkers(),
			TimeoutSeconds:  cfg.Timeout.Seconds(),
			HTTP2:           cfg.HTTP2,
			Description:     cfg.describe(),
		},
		Requests:    a.sent.Load(),
		Succeeded:   a.okCount.Load(),
		BytesIn:     bytesIn,
		BytesOut:    a.bytesOut,
		StatusCodes: a.codes,
		Errors:      []ErrorKind{},
		Nodes:       []NodeShare{},
		Histogram:   []Bucket{},
	}
	for _, s := range cfg.Ramp {
		rep.Load.Ramp = append(rep.Load.Ramp, Step{Rate: s.Rate, DurationSeconds: s.Duration.Seconds()})
	}
	if rep.Requests == 0 {
		return rep
	}
	dur, wait := a.last.Sub(a.first), a.end.Sub(a.last)
	rep.DurationSeconds, rep.WaitSeconds = dur.Seconds(), wait.Seconds()
	if dur > 0 {
		rep.Rate = float64(rep.Requests) / dur.Seconds()
	}
	if dur+wait > 0 {
		rep.Throughput = float64(rep.Succeeded) / (dur + wait).Seconds()
	}
	rep.SuccessRatio = float64(rep.Succeeded) / float64(rep.Requests)
	l := &a.lat
	rep.Latency = LatencySummary{
		Min:  l.Min.Seconds(),
		Mean: (l.Total / time.Duration(rep.Requests)).Seconds(),
		P50:  l.Quantile(0.50).Seconds(),
		P90:  l.Quantile(0.90).Seconds(),
		P95:  l.Quantile(0.95).Seconds(),
		P99:  l.Quantile(0.99).Seconds(),
		Max:  l.Max.Seconds(),
	}
	// The histogram spans the first to the last non-empty bucket.
	lo, hi := -1, -1
	for i, c := range a.hist {
		if c > 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	for i := lo; i <= hi; i++ {
		b := Bucket{Count: a.hist[i]}
		if i > 0 {
			b.From = bucketBounds[i-1].Seconds()
		}
		if i < len(bucketBounds) {
			to := bucketBounds[i].Seconds()
			b.To = &to
		}
		rep.Histogram = append(rep.Histogram, b)
	}
	for _, e := range a.errs {
		rep.Errors = append(rep.Errors, *e)
	}
	slices.SortFunc(rep.Errors, func(x, y ErrorKind) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), strings.Compare(x.Kind, y.Kind))
	})
	for name, n := range a.nodes {
		rep.Nodes = append(rep.Nodes, NodeShare{
			Node:        name,
			Requests:    n.n,
			Share:       float64(n.n) / float64(rep.Requests),
			Errors:      n.errs,
			MeanLatency: (n.lat / time.Duration(n.n)).Seconds(),
		})
	}
	slices.SortFunc(rep.Nodes, func(x, y NodeShare) int {
		return cmp.Or(cmp.Compare(y.Requests, x.Requests), strings.Compare(x.Node, y.Node))
	})
	return rep
}

func describeKind(kind string) string {
	if c, ok := strings.CutPrefix(kind, kindHTTPPrefx); ok {
		code, _ := strconv.Atoi(c)
		return strings.TrimSpace("HTTP " + c + " " + http.StatusText(code))
	}
	switch kind {
	case KindTimeout:
		return "timeout (no complete answer within --timeout)"
	case KindRefused:
		return "connection refused"
	case KindReset:
		return "connection reset"
	case KindClosed:
		return "connection closed early (EOF)"
	case KindDNS:
		return "name resolution failed"
	case KindTLS:
		return "TLS handshake or certificate error"
	}
	return "other error"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a person.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("Target      %s %s\n", r.Method, r.URL)
	p("Load        %s, up to %d connections, %d in flight\n", r.Load.Description, r.Load.Connections, r.Load.MaxWorkers)
	if r.Interrupted {
		p("            interrupted before the end\n")
	}
	p("Requests    %d sent in %s (%.1f req/s)", r.Requests, fmtSeconds(r.DurationSeconds), r.Rate)
	if r.ExpectedRequests > 0 {
		p(", %d due", r.ExpectedRequests)
	}
	p("\n")
	p("Success     %d ok (%.2f %%), throughput %.1f req/s\n", r.Succeeded, 100*r.SuccessRatio, r.Throughput)
	p("Data        %s in, %s out\n", fmtBytes(r.BytesIn), fmtBytes(r.BytesOut))
	if r.Requests == 0 {
		p("\nNo request was sent.\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	l := r.Latency
	p("Latency     min %s  mean %s  p50 %s  p90 %s  p95 %s  p99 %s  max %s\n",
		fmtSeconds(l.Min), fmtSeconds(l.Mean), fmtSeconds(l.P50), fmtSeconds(l.P90),
		fmtSeconds(l.P95), fmtSeconds(l.P99), fmtSeconds(l.Max))

	p("\nLatency histogram\n")
	var most int64
	for _, h := range r.Histogram {
		most = max(most, h.Count)
	}
	const width = 40
	for _, h := range r.Histogram {
		label := "≥ " + fmtSeconds(h.From)
		if h.To != nil {
			label = fmtSeconds(h.From) + " – " + fmtSeconds(*h.To)
			if h.From == 0 {
				label = "< " + fmtSeconds(*h.To)
			}
		}
		bar := int(math.Round(float64(h.Count) / float64(most) * width))
		if h.Count > 0 && bar == 0 {
			bar = 1
		}
		p("  %-17s %-*s %8d  %5.1f %%\n", label, width, strings.Repeat("█", bar), h.Count,
			100*float64(h.Count)/float64(r.Requests))
	}

	p("\nErrors by kind\n")
	if len(r.Errors) == 0 {
		p("  none\n")
	}
	for _, e := range r.Errors {
		p("  %-44s %8d  %5.1f %%\n", e.Description, e.Count, 100*float64(e.Count)/float64(r.Requests))
		if e.Example != "" {
			p("      e.g. %s\n", e.Example)
		}
	}

	p("\nSpread over nodes (%s)\n", NodeHeader)
	w0 := len("NODE")
	for _, n := range r.Nodes {
		w0 = max(w0, len(n.Node))
	}
	p("  %-*s  %8s  %7s  %8s  %12s\n", w0, "NODE", "REQUESTS", "SHARE", "ERRORS", "MEAN LATENCY")
	for _, n := range r.Nodes {
		p("  %-*s  %8d  %5.1f %%  %8d  %12s\n", w0, n.Node, n.Requests, 100*n.Share, n.Errors, fmtSeconds(n.MeanLatency))
	}
	for _, warn := range r.Warnings {
		p("\nwarning: %s\n", warn)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtSeconds formats seconds as a short duration with three significant
// digits: 412µs, 1.27ms, 2.5s.
func fmtSeconds(s float64) string {
	d := time.Duration(s * 1e9)
	switch {
	case d == 0:
		return "0"
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return trimZeros(fmt.Sprintf("%.3g", float64(d)/1e3)) + "µs"
	case d < time.Second:
		return trimZeros(fmt.Sprintf("%.3g", float64(d)/1e6)) + "ms"
	}
	return trimZeros(fmt.Sprintf("%.3g", d.Seconds())) + "s"
}

func trimZeros(s string) string {
	if strings.Contains(s, "e") {
		f, _ := strconv.ParseFloat(s, 64)
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return s
}

func fmtBytes(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), ""
	for _, s := range []string{"kB", "MB", "GB", "TB"} {
		v /= unit
		suffix = s
		if v < unit {
			break
		}
	}
	return fmt.Sprintf("%.3g %s", v, suffix)
}
