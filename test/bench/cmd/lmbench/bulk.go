package main

import (
	"context"
	"fmt"
	"github.com/loadmesh/loadmesh/test/bench/internal/benchproc"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// bulkCase is one large transfer through a path.
type bulkCase struct {
	Path   string // e.g. "loadmesh A → QUIC → B"
	Kind   string // download, upload, echo
	URL    string
	Procs  []*benchproc.Proc // the proxies whose RSS is watched
	Labels []string
}

// bulkResult is what one large transfer cost.
type bulkResult struct {
	bulkCase
	Bytes    int64 // bytes moved in each direction that carries the body
	Seconds  float64
	Err      error
	Before   []int64 // VmRSS before, KiB, per proc
	Peak     []int64 // max(sampled VmRSS, VmHWM after reset), KiB
	CPU      []float64
	HWMReset bool
}

func (r bulkResult) MiBps() float64 {
	if r.Seconds == 0 {
		return 0
	}
	return float64(r.Bytes) / (1 << 20) / r.Seconds
}

// zeroReader yields zeros without allocating.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// runBulk moves size bytes through c and samples the RSS of c.Procs every
// 20 ms. The transfer is bounded by timeout.
func runBulk(ctx context.Context, c bulkCase, size int64, timeout time.Duration) bulkResult {
	res := bulkResult{bulkCase: c}
	n := len(c.Procs)
	res.Before, res.Peak, res.CPU = make([]int64, n), make([]int64, n), make([]float64, n)
	res.HWMReset = true
	cpu0 := make([]float64, n)
	for i, p := range c.Procs {
		if err := benchproc.ResetPeakRSS(p.PID()); err != nil {
			res.HWMReset = false
		}
		res.Before[i], _, _ = benchproc.MemKiB(p.PID())
		res.Peak[i] = res.Before[i]
		cpu0[i], _ = benchproc.CPUSeconds(p.PID())
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			for i, p := range c.Procs {
				rss, _, err := benchproc.MemKiB(p.PID())
				if err == nil {
					mu.Lock()
					res.Peak[i] = max(res.Peak[i], rss)
					mu.Unlock()
				}
			}
		}
	})

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	res.Bytes, res.Err = transfer(ctx, c, size)
	res.Seconds = time.Since(start).Seconds()
	close(stop)
	wg.Wait()

	for i, p := range c.Procs {
		_, hwm, err := benchproc.MemKiB(p.PID())
		if err == nil && res.HWMReset {
			res.Peak[i] = max(res.Peak[i], hwm)
		}
		cpu1, _ := benchproc.CPUSeconds(p.PID())
		res.CPU[i] = cpu1 - cpu0[i]
	}
	return res
}

func transfer(ctx context.Context, c bulkCase, size int64) (int64, error) {
	tr := &http.Transport{DisableCompression: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var req *http.Request
	switch c.Kind {
	case "download":
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/bulk?size=%d", c.URL, size), nil)
	case "upload":
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"/bulk", io.LimitReader(zeroReader{}, size))
		req.ContentLength = size
	case "echo":
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, c.URL+"/bulk?echo=1", io.LimitReader(zeroReader{}, size))
		req.ContentLength = size
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	if c.Kind == "upload" {
		// The demo backend answers with the number of bytes it received.
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if err != nil {
			return 0, err
		}
		if want := fmt.Sprintf("received %d bytes", size); !strings.Contains(string(b), want) {
			return 0, fmt.Errorf("backend did not get the whole body: %q", b)
		}
		return size, nil
	}
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return got, fmt.Errorf("after %d bytes: %w", got, err)
	}
	if got != size {
		return got, fmt.Errorf("got %d of %d bytes", got, size)
	}
	return size, nil
}
