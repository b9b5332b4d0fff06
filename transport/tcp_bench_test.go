package transport

import (
	"io"
	"net"
	"testing"
)

// BenchmarkTCPRelayUpload measures one long upload from a client through
// node a's listener and the QUIC mesh to node b's backend, which
// discards it (MB/s = b.SetBytes per op of 64 MiB).
func BenchmarkTCPRelayUpload(b *testing.B) {
	const size = 64 << 20
	backend := tcpBackend(b, func(c net.Conn) { io.Copy(io.Discard, c); c.(*net.TCPConn).CloseWrite() })
	a, _, _ := meshPair(b, backend, func(c *TCPServiceConfig) { c.Health = "none" })
	b.SetBytes(size)
	for b.Loop() {
		c, err := net.Dial("tcp", a.addr("svc"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(c, &offsetPattern{left: size}); err != nil {
			b.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
	}
	b.StopTimer()
	mfs, _ := a.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "loadmesh_transport_peer_lost_packets" {
			for _, m := range mf.GetMetric() {
				b.Logf("lost packets to %s: %v", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue())
			}
		}
	}
}
