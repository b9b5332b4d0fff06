package scheduler

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"
)

var sampleLoads = []Load{
	{},
	{Version: 1, Healthy: true},
	{
		Version: 1735786800123, Inflight: 17, Capacity: 64, RPS: 1234.5,
		LatencyEWMA: 12345 * time.Microsecond, P95: 87 * time.Millisecond,
		ErrorRate: 0.0123, CPU: 0.71, Mem: 0.42, Healthy: true,
	},
	{
		Version: math.MaxUint64, Inflight: loadMaxInt, Capacity: loadMaxInt, RPS: float64(loadMaxDeciRS) / 10,
		LatencyEWMA: loadMaxMicros * time.Microsecond, P95: loadMaxMicros * time.Microsecond,
		ErrorRate: 1, CPU: 1, Mem: 1, Healthy: true,
	},
}

func TestLoadRoundTrip(t *testing.T) {
	for _, l := range sampleLoads {
		b := EncodeLoad(l)
		if len(b) > MaxLoadSize {
			t.Errorf("%+v encodes to %d bytes, over MaxLoadSize %d", l, len(b), MaxLoadSize)
		}
		got, err := DecodeLoad(b)
		if err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		if got != l.Quantize() || got != l {
			t.Errorf("round trip of %+v gave %+v", l, got)
		}
	}
	if n := len(EncodeLoad(sampleLoads[2])); n > 30 {
		t.Errorf("typical summary takes %d bytes, want at most 30", n)
	}
}

func TestLoadQuantize(t *testing.T) {
	tests := []struct {
		name string
		in   Load
		want Load
	}{
		{"negative and NaN become zero",
			Load{Inflight: -3, Capacity: -1, RPS: math.NaN(), LatencyEWMA: -time.Second, P95: -1, ErrorRate: math.NaN(), CPU: -0.5, Mem: math.Inf(-1)},
			Load{}},
		{"large values are clamped",
			Load{Inflight: 1 << 40, Capacity: math.MaxInt, RPS: math.Inf(1), LatencyEWMA: time.Duration(math.MaxInt64), P95: time.Hour, ErrorRate: 7, CPU: 1.5, Mem: math.Inf(1)},
			Load{Inflight: loadMaxInt, Capacity: loadMaxInt, RPS: float64(loadMaxDeciRS) / 10, LatencyEWMA: loadMaxMicros * time.Microsecond, P95: loadMaxMicros * time.Microsecond, ErrorRate: 1, CPU: 1, Mem: 1}},
		{"rounded to the documented precision",
			Load{RPS: 12.34, LatencyEWMA: 1499 * time.Nanosecond, P95: 1500 * time.Nanosecond, ErrorRate: 0.123456, CPU: 0.00004, Mem: 0.99996},
			Load{RPS: 12.3, LatencyEWMA: time.Microsecond, P95: 2 * time.Microsecond, ErrorRate: 0.1235, CPU: 0, Mem: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.Quantize(); got != tt.want {
				t.Fatalf("Quantize() = %+v, want %+v", got, tt.want)
			}
			got, err := DecodeLoad(EncodeLoad(tt.in))
			if err != nil || got != tt.want {
				t.Fatalf("decode(encode) = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestDecodeLoadRejects(t *testing.T) {
	good := EncodeLoad(sampleLoads[2])
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"one byte", []byte{1}},
		{"unknown format", append([]byte{2}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"overlong varint", append([]byte{1, 1}, bytes.Repeat([]byte{0xff}, 11)...)},
		{"ratio out of range", append(append([]byte{}, good[:len(good)-2]...), 0x91, 0x4e)}, // mem 10001
		{"inflight out of range", []byte{1, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := DecodeLoad(tt.in); !errors.Is(err, ErrBadLoad) {
				t.Fatalf("DecodeLoad(%x) = %+v, %v; want ErrBadLoad", tt.in, l, err)
			}
		})
	}
	// Bytes after the last field are reserved for later formats.
	if l, err := DecodeLoad(append(append([]byte{}, good...), 9, 9, 9)); err != nil || l != sampleLoads[2] {
		t.Fatalf("trailing bytes: %+v, %v", l, err)
	}
}

func TestAppendLoadDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = AppendLoad(buf[:0], sampleLoads[2]) }); n != 0 {
		t.Fatalf("AppendLoad allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = DecodeLoad(buf) }); n != 0 {
		t.Fatalf("DecodeLoad allocates %v times", n)
	}
}

func FuzzDecodeLoad(f *testing.F) {
	for _, l := range sampleLoads {
		f.Add(EncodeLoad(l))
	}
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 0xff, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeLoad(b)
		if err != nil {
			return
		}
		if l != l.Quantize() {
			t.Fatalf("decoded %+v is not at the encoding's precision (%+v)", l, l.Quantize())
		}
		again, err := DecodeLoad(EncodeLoad(l))
		if err != nil || again != l {
			t.Fatalf("re-encoding %+v gave %+v, %v", l, again, err)
		}
	})
}

func FuzzLoadRoundTrip(f *testing.F) {
	f.Add(uint64(1), 3, 10, 12.5, int64(time.Millisecond), int64(time.Second), 0.1, 0.5, 0.25, true)
	f.Add(uint64(math.MaxUint64), -1, math.MaxInt, math.Inf(1), int64(math.MinInt64), int64(math.MaxInt64), math.NaN(), 2.0, -1.0, false)
	f.Fuzz(func(t *testing.T, version uint64, inflight, capacity int, rps float64, lat, p95 int64, errRate, cpu, mem float64, healthy bool) {
		l := Load{
			Version: version, Inflight: inflight, Capacity: capacity, RPS: rps,
			LatencyEWMA: time.Duration(lat), P95: time.Duration(p95),
			ErrorRate: errRate, CPU: cpu, Mem: mem, Healthy: healthy,
		}
		b := EncodeLoad(l)
		if len(b) > MaxLoadSize {
			t.Fatalf("%d bytes > MaxLoadSize", len(b))
		}
		got, err := DecodeLoad(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got != l.Quantize() {
			t.Fatalf("decode(encode(%+v)) = %+v, want %+v", l, got, l.Quantize())
		}
		if got.Quantize() != got {
			t.Fatalf("Quantize is not idempotent on %+v", got)
		}
		// Precision as documented, for in-range inputs.
		if rps >= 0 && rps < 1e6 && math.Abs(got.RPS-rps) > 0.05+1e-9 {
			t.Fatalf("RPS %v decoded as %v", rps, got.RPS)
		}
		if lat >= 0 && lat < int64(time.Minute) && absDur(got.LatencyEWMA-time.Duration(lat)) > time.Microsecond/2 {
			t.Fatalf("latency %v decoded as %v", time.Duration(lat), got.LatencyEWMA)
		}
		if errRate >= 0 && errRate <= 1 && math.Abs(got.ErrorRate-errRate) > 0.00005+1e-12 {
			t.Fatalf("error rate %v decoded as %v", errRate, got.ErrorRate)
		}
	})
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func TestLoadTableRejectsStaleVersions(t *testing.T) {
	clk := newFakeClock()
	tab := NewLoadTable(clk.Now)
	steps := []struct {
		node     string
		version  uint64
		inflight int
		want     bool
	}{
		{"a", 0, 1, false}, // version 0 is "no summary"
		{"a", 5, 1, true},
		{"a", 4, 2, false}, // late, older
		{"a", 5, 3, false}, // duplicate
		{"a", 6, 4, true},
		{"b", 1, 9, true}, // nodes are independent
	}
	for _, st := range steps {
		if got := tab.Update(st.node, Load{Version: st.version, Inflight: st.inflight}); got != st.want {
			t.Fatalf("Update(%s, v%d) = %v, want %v", st.node, st.version, got, st.want)
		}
	}
	clk.Advance(3 * time.Second)
	l, age, ok := tab.Get("a")
	if !ok || l.Version != 6 || l.Inflight != 4 || age != 3*time.Second {
		t.Fatalf("Get(a) = %+v, %v, %v", l, age, ok)
	}
	peers := []Peer{{Name: "a"}, {Name: "b"}, {Name: "c", Load: Load{Version: 9}}}
	tab.Annotate(peers)
	if peers[0].Load.Version != 6 || peers[0].LoadAge != 3*time.Second || peers[1].Load.Inflight != 9 || peers[2].Load != (Load{}) {
		t.Fatalf("Annotate gave %+v", peers)
	}
	tab.Forget("a")
	if _, _, ok := tab.Get("a"); ok || tab.Len() != 1 {
		t.Fatal("Forget kept a")
	}
	if !tab.Update("a", Load{Version: 1}) {
		t.Fatal("a forgotten node should start afresh")
	}
}

func TestNextLoadVersion(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	tests := []struct {
		name string
		prev uint64
		want uint64
	}{
		{"first version is the clock", 0, 1_700_000_000_000},
		{"clock ahead of prev", 1_600_000_000_000, 1_700_000_000_000},
		{"same millisecond", 1_700_000_000_000, 1_700_000_000_001},
		{"prev ahead of clock", 1_800_000_000_000, 1_800_000_000_001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NextLoadVersion(tt.prev, now); got != tt.want {
				t.Fatalf("NextLoadVersion(%d) = %d, want %d", tt.prev, got, tt.want)
			}
		})
	}
}
