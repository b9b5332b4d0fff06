package scheduler_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

// The ingress's request path: pick a node, try it, report the outcome,
// and retry elsewhere when that is safe and the budget allows.
func Example() {
	s, err := scheduler.New(scheduler.DefaultConfig(), scheduler.Deps{
		Rand: rand.NewPCG(1, 2), // deterministic for the example; nil in production
	})
	if err != nil {
		panic(err)
	}
	// On a timer and on membership changes: the local node and its peers,
	// with their gossiped load.
	s.SetPeers([]scheduler.Peer{
		{Name: "self", Local: true, State: scheduler.StateActive, Serving: true, Capacity: 1},
		{Name: "node-b", Addr: "10.0.0.2:7443", State: scheduler.StateActive, Serving: true, Capacity: 8},
		{Name: "node-c", Addr: "10.0.0.3:7443", State: scheduler.StateActive, Serving: true, Capacity: 8,
			Load: scheduler.Load{Version: 1, Healthy: true, Inflight: 6, LatencyEWMA: 40 * time.Millisecond}},
	})

	// A request: the local node has headroom, so it serves.
	first, err := s.Pick("", nil)
	if err != nil {
		panic(err)
	}
	fmt.Println("1st:", first.Peer.Name, "local:", first.Peer.Local)

	// Meanwhile another request: the local node is at capacity, so it is
	// forwarded. The peer fails; the request is retried on another node.
	second, _ := s.Pick("", nil)
	fmt.Println("2nd:", second.Peer.Name, second.Peer.Addr)
	second.Done(scheduler.Result{Err: errors.New("stream reset")})
	retry, err := s.Pick("", []string{second.Peer.Name})
	switch {
	case errors.Is(err, scheduler.ErrNoPeers): // includes ErrSaturated
		fmt.Println("answer 503")
	case errors.Is(err, scheduler.ErrRetryBudgetExhausted):
		fmt.Println("answer 502 with the first failure")
	case err == nil:
		fmt.Println("2nd, retried:", retry.Peer.Name)
		retry.Done(scheduler.Result{Status: 200})
	}
	first.Done(scheduler.Result{Status: 200})
	// Output:
	// 1st: self local: true
	// 2nd: node-b 10.0.0.2:7443
	// 2nd, retried: node-c
}

func ExampleEncodeLoad() {
	l := scheduler.Load{
		Version: 1735786800123, Inflight: 17, Capacity: 64, RPS: 1234.5,
		LatencyEWMA: 12 * time.Millisecond, P95: 87 * time.Millisecond,
		ErrorRate: 0.01, CPU: 0.71, Mem: 0.42, Healthy: true,
	}
	b := scheduler.EncodeLoad(l)
	back, _ := scheduler.DecodeLoad(b)
	fmt.Println(len(b), "bytes; round trip exact:", back == l)
	// Output: 22 bytes; round trip exact: true
}

func ExampleNewPolicy() {
	cfg := scheduler.DefaultPolicyConfig()
	cfg.LoadFactor = 1.5
	p, err := scheduler.NewPolicy("consistent-hash", cfg, nil)
	if err != nil {
		panic(err)
	}
	peers := []scheduler.Peer{
		{Name: "a", Addr: "a:7443", State: scheduler.StateActive, Serving: true},
		{Name: "b", Addr: "b:7443", State: scheduler.StateActive, Serving: true},
		{Name: "c", Addr: "c:7443", State: scheduler.StateActive, Serving: true},
	}
	first := p.Choose(peers, scheduler.Request{Key: "user-42"})
	again := p.Choose(peers, scheduler.Request{Key: "user-42"})
	fmt.Println(first == again)
	_, err = scheduler.NewPolicy("fastest", cfg, nil)
	fmt.Println(err)
	// Output:
	// true
	// unknown policy "fastest" (want p2c-ewma, least-inflight, weighted-round-robin, random, consistent-hash)
}
