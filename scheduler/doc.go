// Package scheduler is loadmesh's domain vocabulary and decision logic:
// node states, the capacity plan, peers and their load as the scheduler
// sees them, and the policies that choose where a request goes.
//
// # What it owns, and what it does not
//
// It is pure logic. It opens no sockets, touches no disk, starts no
// goroutines and never imports memberlist, raft or quic-go: the packages
// that own those libraries (cluster, store, transport) translate their data
// into the plain values declared here, and cmd/loadmesh wires them together.
// `make deps-check` keeps this arrow pointing one way. Its only third-party
// import is client_golang, for an optional collector registered on the
// Registerer passed in Deps.
//
// It does not gossip, measure CPU or memory, parse HTTP or proxy anything.
// Time comes from an injected clock (a now func; time.Now by default) and
// randomness from an injected math/rand/v2 Source, so every decision can be
// replayed in tests.
//
// # Concurrency
//
// Everything exported here is safe for concurrent use unless its comment
// says otherwise. Nothing blocks: the request path (Scheduler.Pick,
// Ticket.Done, Policy.Choose, Tracker, Breaker, Window, Meter) uses atomic
// operations and, at most, short uncontended per-peer or per-budget locks.
//
// # Vocabulary
//
//   - NodeState, Plan, PlanNode, Event: the replicated capacity plan.
//   - Peer: a node as a candidate — plan state, role, capacity, whether it
//     is the local node, its last gossiped Load and that Load's age. Inside
//     a Scheduler a Peer also links to this node's own figures, merged by
//     Peer.Inflight (max of gossiped and local in-flight) and Peer.Latency
//     (this node's peak-EWMA while fresh, else the gossiped one).
//   - Load: a node's load summary as gossiped — Version, Inflight, Capacity,
//     RPS, LatencyEWMA, P95, ErrorRate, CPU, Mem, Healthy. EncodeLoad and
//     DecodeLoad give a varint form of at most MaxLoadSize (38) bytes,
//     typically about 22, that fits in memberlist node metadata next to the
//     node's other fields. LoadTable keeps the newest summary per node and
//     rejects stale versions; NextLoadVersion makes versions that survive
//     restarts.
//
// A peer is eligible (Peer.Eligible) when its plan state is StateActive,
// it has a backend (Serving), an address (or is the local node) and its
// gossiped Load says Healthy (or it has gossiped none yet). A peer is
// usable for one request (Request.Usable) when it is eligible, was not
// tried by that request, is not ejected, is not holding us off with
// Retry-After and is below its in-flight cap.
//
// # Measuring
//
//   - PeakEWMA: a time-decaying, peak-sensitive latency average (Finagle's
//     and Linkerd's peak-EWMA): tau-based decay, a sample above the current
//     value is taken at once, and the value decays towards zero while idle.
//   - Window: requests/s, error rate and p50/p95/p99 over a sliding window
//     (default 10s in 1s buckets), each bucket holding a log-linear
//     latency histogram (8 sub-buckets per power of two, ≤ 6.25% error);
//     fixed memory, lock-free recording.
//   - Meter: Window + PeakEWMA + in-flight count for the node's own
//     backend, producing the Load it gossips.
//   - Tracker: what this node sees of each peer between gossip rounds —
//     its own requests in flight to it and a peak-EWMA of the latency it
//     measures (network hop included).
//
// # Policies
//
// A Policy chooses an index among candidates for a Request (affinity Key,
// Tried peers, Now). NewPolicy builds one by name, for the --policy flag:
//
//	p2c-ewma (default)    power of two random choices on latency × (in flight + 1) / weight,
//	                      with LocalFirst: the local node while it has headroom    O(1)
//	least-inflight        fewest in flight relative to capacity                    O(n)
//	weighted-round-robin  nginx's smooth weighted round-robin, weights = capacity   O(n)
//	random                uniform                                                  O(1)
//	consistent-hash       consistent hashing with bounded loads (Mirrokni,
//	                      Thorup, Zadimoghaddam; HAProxy's hash-balance-factor)    O(n) + O(log n)
//
// With PolicyConfig.Zone set, ZoneAware wraps the policy: candidates in the
// ingress's zone are preferred while the zone uses less than ZoneHeadroom
// of its capacity, and traffic spills to all zones otherwise. The O(n)
// policies cost roughly 8-10ns per candidate; p2c-ewma decides in well
// under a microsecond at any cluster size.
//
// # Resilience
//
//   - Outliers: passive outlier detection. Consecutive failures (5) or an
//     error rate above 50% with at least 20 requests over 10s eject a peer
//     for 30s × 2^(n-1), capped at 5m, n counting its recent ejections; at
//     most half the peers are ejected at once; ejections end by themselves.
//   - RetryBudget: retries allowed while they stay within 20% of first
//     attempts over 10s plus 3 retries/s (Finagle and Envoy style).
//     ParseRetryAfter reads Retry-After; the Scheduler keeps a peer that
//     answered 429 or 503 with it out of rotation until then.
//   - Breaker: a cap on this node's requests in flight to one peer
//     (default: the peer's capacity); over it the peer is skipped, and when
//     every candidate is full Pick fails fast with ErrSaturated.
//
// # Scheduler
//
// Scheduler ties it together for the ingress. SetPeers takes the candidate
// list (the local node included, with Local true) on a timer or on
// membership changes; Pick chooses a target and takes an in-flight slot;
// Ticket.Done reports the outcome, feeding the tracker, the outlier
// detector and Retry-After holds. Picks with tried peers are retries and
// draw on the retry budget. Stats and Status expose counters and per-peer
// figures; with Deps.Registerer they are exported as loadmesh_scheduler_*
// metrics at scrape time.
//
// Selector is the older, feedback-free way to choose: a PeerSource and a
// Policy, nothing learned from outcomes.
//
// # Usage
//
// A sketch of the ingress integration (cmd/loadmesh wires the real thing):
//
//	meter, _ := scheduler.NewMeter(scheduler.DefaultMeterConfig(), nil)
//	cfg := scheduler.DefaultConfig()
//	cfg.Policy = flagPolicy            // --policy
//	cfg.Balance.Zone = myZone
//	s, err := scheduler.New(cfg, scheduler.Deps{
//		Registerer:    reg,
//		LocalInflight: meter.Inflight, // the local backend's live count
//	})
//
//	// Gossip: publish our summary, absorb the others'.
//	meta.Load = scheduler.EncodeLoad(meter.Load(capacity, healthy, cpu, mem))
//	if l, err := scheduler.DecodeLoad(peerMeta.Load); err == nil {
//		loads.Update(peerName, l)          // a *LoadTable; stale versions are dropped
//	}
//
//	// Every 100ms and on membership events.
//	peers := buildPeers(members, plan)   // self included with Local: true
//	loads.Annotate(peers)
//	s.SetPeers(peers)
//
//	// Per request, in the ingress's attempt loop.
//	var tried []string
//	for attempt := 0; attempt < maxAttempts; attempt++ {
//		t, err := s.Pick(r.Header.Get(affinityHeader), tried)
//		if err != nil {
//			// ErrNoPeers, ErrSaturated: 503 (or serve locally anyway);
//			// ErrRetryBudgetExhausted: answer with the last failure.
//			break
//		}
//		var res scheduler.Result
//		if t.Peer.Local {
//			res = serveLocally(w, r)
//		} else {
//			res = forward(w, r, t.Peer.Name, t.Peer.Addr)
//		}
//		t.Done(res) // exactly once; Status, Err and Retry-After feed the scheduler
//		if res.Err == nil || !retryable(res, r) {
//			break
//		}
//		tried = append(tried, t.Peer.Name)
//	}
package scheduler
