package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// dirProbeEvery bounds how often the data dir is probed; /readyz and
// scrapes in between reuse the last answer.
const dirProbeEvery = 2 * time.Second

// dirProbe checks, on demand and at most every dirProbeEvery, that the
// data dir still takes writes: a full disk or a read-only remount leaves
// Raft unable to append, and the node must say so (not ready) rather than
// look healthy while it silently stops applying.
type dirProbe struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

// dataDirWritable writes, syncs and removes a small file in the data dir.
func (a *Agent) dataDirWritable() error {
	if a.dataDir == nil {
		return nil
	}
	p := &a.dirProbe
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.at) < dirProbeEvery {
		return p.err
	}
	err := probeDir(a.dataDir.Path)
	if (err == nil) != (p.err == nil) || p.at.IsZero() && err != nil {
		if err != nil {
			a.log.Error("data dir does not take writes; this node is not ready and cannot store Raft entries", "dir", a.dataDir.Path, "error", err)
		} else {
			a.log.Info("data dir takes writes again", "dir", a.dataDir.Path)
		}
	}
	p.at, p.err = time.Now(), err
	return err
}

func probeDir(dir string) error {
	f, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	name := f.Name()
	defer os.Remove(name)
	// 4 KiB, like a Raft entry with headroom: a nearly full disk fails here.
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		f.Close()
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	return os.Remove(filepath.Clean(name))
}

// dataDirGauge exports the probe as loadmesh_data_dir_writable.
func (a *Agent) dataDirGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "loadmesh_data_dir_writable",
		Help: "1 while the data dir takes writes (probed at most every 2s, at scrape or /readyz time).",
	}, func() float64 {
		if a.dataDirWritable() != nil {
			return 0
		}
		return 1
	})
}
