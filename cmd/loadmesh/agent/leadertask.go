package agent

import "sync"

// leaderTask runs one goroutine of a cluster.LeaderHook while this node
// leads: start launches run with a fresh stop channel (from Establish),
// stop closes it and waits for run to return (from Revoke).
type leaderTask struct {
	mu     sync.Mutex
	stopCh chan struct{}
	wg     sync.WaitGroup
}

func (t *leaderTask) start(run func(stop chan struct{})) {
	t.mu.Lock()
	defer t.mu.Unlock()
	stop := make(chan struct{})
	t.stopCh = stop
	t.wg.Go(func() { run(stop) })
}

func (t *leaderTask) stop() {
	t.mu.Lock()
	stop := t.stopCh
	t.stopCh = nil
	t.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	t.wg.Wait()
}
