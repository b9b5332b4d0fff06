package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// memberLoadCollector exports every member's gossiped load figures, read
// at scrape time.
type memberLoadCollector struct{ a *Agent }

var (
	mlInflight = prometheus.NewDesc("loadmesh_scheduler_member_inflight_requests", "Member's in-flight requests, as last gossiped.", []string{"node"}, nil)
	mlCapacity = prometheus.NewDesc("loadmesh_scheduler_member_capacity_requests", "Member's --capacity.", []string{"node"}, nil)
	mlRPS      = prometheus.NewDesc("loadmesh_scheduler_member_requests_per_second", "Member's requests/s over its window.", []string{"node"}, nil)
	mlEWMA     = prometheus.NewDesc("loadmesh_scheduler_member_latency_ewma_seconds", "Member's backend latency EWMA.", []string{"node"}, nil)
	mlP95      = prometheus.NewDesc("loadmesh_scheduler_member_latency_p95_seconds", "Member's backend p95 latency over its window.", []string{"node"}, nil)
	mlErr      = prometheus.NewDesc("loadmesh_scheduler_member_error_ratio", "Member's backend error ratio over its window.", []string{"node"}, nil)
	mlCPU      = prometheus.NewDesc("loadmesh_scheduler_member_cpu_ratio", "Member's machine (or cgroup) CPU use, 0..1.", []string{"node"}, nil)
	mlMem      = prometheus.NewDesc("loadmesh_scheduler_member_memory_ratio", "Member's machine (or cgroup) memory use, 0..1.", []string{"node"}, nil)
	mlHealthy  = prometheus.NewDesc("loadmesh_scheduler_member_healthy", "1 if the member's backend is healthy.", []string{"node"}, nil)
	mlAge      = prometheus.NewDesc("loadmesh_scheduler_member_load_age_seconds", "Age of the member's last load summary at this node.", []string{"node"}, nil)
	mlEjected  = prometheus.NewDesc("loadmesh_scheduler_member_ejected", "1 while this node's outlier detection ejects the member.", []string{"node"}, nil)
)

func (c memberLoadCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mlInflight, mlCapacity, mlRPS, mlEWMA, mlP95, mlErr, mlCPU, mlMem, mlHealthy, mlAge, mlEjected} {
		ch <- d
	}
}

func (c memberLoadCollector) Collect(ch chan<- prometheus.Metric) {
	if c.a.cluster == nil || c.a.peers == nil {
		return
	}
	g := func(d *prometheus.Desc, v float64, node string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, node)
	}
	for _, m := range c.a.memberViews() {
		l := m.Load
		if l == nil {
			continue
		}
		g(mlInflight, float64(l.Inflight), m.Name)
		g(mlCapacity, float64(l.Capacity), m.Name)
		g(mlRPS, l.RPS, m.Name)
		g(mlEWMA, l.LatencyEWMA, m.Name)
		g(mlP95, l.P95, m.Name)
		g(mlErr, l.ErrorRate, m.Name)
		g(mlCPU, l.CPU, m.Name)
		g(mlMem, l.Mem, m.Name)
		g(mlHealthy, b2f(l.Healthy), m.Name)
		g(mlAge, l.AgeSeconds, m.Name)
		g(mlEjected, b2f(l.Ejected), m.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
