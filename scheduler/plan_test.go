package scheduler

import (
	"testing"
	"time"
)

func TestParseNodeState(t *testing.T) {
	tests := []struct {
		in      string
		want    NodeState
		traffic bool
		wantErr bool
	}{
		{"active", StateActive, true, false},
		{"standby", StateStandby, false, false},
		{"draining", StateDraining, false, false},
		{"cordoned", StateCordoned, false, false},
		{"Active", "", false, true},
		{"", "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseNodeState(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseNodeState(%q) = %q, %v", tt.in, got, err)
			}
			if got.TakesTraffic() != tt.traffic {
				t.Fatalf("%q TakesTraffic %v", got, got.TakesTraffic())
			}
		})
	}
}

func TestPlanCloneIsDeep(t *testing.T) {
	p := Plan{Version: 3, Nodes: map[string]PlanNode{
		"a": {State: StateActive, Zone: "z1", Tags: map[string]string{"k": "v"}, Since: time.Unix(1, 0)},
	}}
	c := p.Clone()
	c.Nodes["a"].Tags["k"] = "changed"
	c.Nodes["b"] = PlanNode{State: StateStandby}
	if p.Nodes["a"].Tags["k"] != "v" || len(p.Nodes) != 1 {
		t.Fatal("Clone shares memory with the original")
	}
	if st, ok := c.StateOf("b"); !ok || st != StateStandby {
		t.Fatalf("StateOf(b) = %q, %v", st, ok)
	}
	if _, ok := p.StateOf("b"); ok {
		t.Fatal("unknown node reported")
	}
}
