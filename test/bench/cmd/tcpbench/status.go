package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// agentStatus is the "services" part of one agent's GET /v1/status, kept
// as generic JSON so that a field added or renamed there does not break
// the benchmark (the report shows what it finds).
type agentStatus struct {
	Label    string
	Services []map[string]any
	Err      string
}

func fetchStatus(ctx context.Context, api string) ([]map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+"/v1/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/status: %s", resp.Status)
	}
	var doc struct {
		Services []map[string]any `json:"services"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, err
	}
	return doc.Services, nil
}

func (b *bench) agentStatuses(ctx context.Context) []agentStatus {
	var out []agentStatus
	for i, api := range b.lm.API {
		st := agentStatus{Label: b.lm.Labels[i]}
		svcs, err := fetchStatus(ctx, api)
		if err != nil {
			st.Err = err.Error()
		}
		st.Services = svcs
		out = append(out, st)
	}
	return out
}

// normKey folds a JSON key for matching: lower case, no _ or -.
func normKey(k string) string {
	return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(k))
}

// field finds the first of keys (compared by normKey) in m.
func field(m map[string]any, keys ...string) (any, bool) {
	for _, want := range keys {
		for k, v := range m {
			if normKey(k) == normKey(want) {
				return v, true
			}
		}
	}
	return nil, false
}

func strField(m map[string]any, keys ...string) string {
	v, ok := field(m, keys...)
	if !ok {
		return ""
	}
	s, _ := v.(string)
	return s
}

// openOf is the number of connections a service reports open: the sum
// of its numeric fields named open* (open_client_connections and
// open_backend_connections); false when it has none.
func openOf(s map[string]any) (float64, bool) {
	total, known := 0.0, false
	for k, v := range s {
		if f, ok := v.(float64); ok && strings.HasPrefix(normKey(k), "open") {
			total += f
			known = true
		}
	}
	return total, known
}

// errorsOf is a service's "errors": a number, or an object of counts by
// kind (absent: none).
func errorsOf(s map[string]any) map[string]float64 {
	out := map[string]float64{}
	v, ok := field(s, "errors")
	if !ok {
		return out
	}
	switch x := v.(type) {
	case float64:
		out["errors"] = x
	case map[string]any:
		for k, n := range x {
			if f, ok := n.(float64); ok {
				out[k] = f
			}
		}
	}
	return out
}

// openConns polls both agents until none reports an open connection, at
// most limit, and returns the last total (-1: no agent reported one).
func (b *bench) openConns(ctx context.Context, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for {
		total, known := 0, false
		for _, st := range b.agentStatuses(ctx) {
			for _, s := range st.Services {
				if v, ok := openOf(s); ok {
					total += int(v)
					known = true
				}
			}
		}
		if !known {
			return -1
		}
		if total == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return total
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitReleased checks, after the last round, that both agents report no
// open connection within limit; it returns "" or what it found.
func (b *bench) waitReleased(ctx context.Context, limit time.Duration) string {
	n := b.openConns(ctx, limit)
	switch {
	case n < 0:
		return "could not tell: /v1/status names no open-connection count (no services[].open* field)"
	case n > 0:
		return fmt.Sprintf("%d connections still reported open %s after the last client closed", n, limit)
	}
	return ""
}

// checkPlacement makes sure that A placed the probe connections on B (A
// offers no backend, so a served connection must have gone to B): when
// A's status says which node took its connections, it must be B only.
func (b *bench) checkPlacement(ctx context.Context) error {
	sts := b.agentStatuses(ctx)
	if len(sts) == 0 || sts[0].Err != "" {
		return fmt.Errorf("agent A's /v1/status: %v", sts)
	}
	for _, s := range sts[0].Services {
		v, ok := field(s, "placed_by_node", "placed")
		if !ok {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			continue
		}
		for node, n := range m {
			if f, _ := n.(float64); f > 0 && node != "b" {
				return fmt.Errorf("agent A placed %v connections of service %s on %q, want only b", f, strField(s, "name"), node)
			}
		}
	}
	return nil
}

// statusLines summarises one status snapshot: per agent and service,
// every scalar field, sorted by key.
func statusLines(sts []agentStatus) []string {
	var out []string
	for _, st := range sts {
		if st.Err != "" {
			out = append(out, fmt.Sprintf("%s: %s", st.Label, st.Err))
			continue
		}
		for _, s := range st.Services {
			out = append(out, fmt.Sprintf("%s, service %s: %s", st.Label, strField(s, "name"), flatJSON(s)))
		}
	}
	return out
}

// flatJSON renders a JSON object as "k=v" pairs, nested keys joined by
// dots, sorted.
func flatJSON(m map[string]any) string {
	var kv []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, vv := range x {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				walk(p, vv)
			}
		case []any:
			b, _ := json.Marshal(x)
			kv = append(kv, prefix+"="+string(b))
		case float64:
			kv = append(kv, prefix+"="+strconv.FormatFloat(x, 'f', -1, 64))
		default:
			kv = append(kv, fmt.Sprintf("%s=%v", prefix, x))
		}
	}
	walk("", m)
	sort.Strings(kv)
	return strings.Join(kv, " ")
}

// serviceErrors sums the error counters of one snapshot per agent and
// kind.
func serviceErrors(sts []agentStatus) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, st := range sts {
		out[st.Label] = map[string]float64{}
		for _, s := range st.Services {
			for k, v := range errorsOf(s) {
				out[st.Label][k] += v
			}
		}
	}
	return out
}
