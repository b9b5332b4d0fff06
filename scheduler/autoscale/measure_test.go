package autoscale

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestMeasureTraces runs reactive-only against predictive+scheduled on the
// shipped traces and, when LOADMESH_SHARED is set to the shared folder
// (e.g. ../../../shared from this package, or /work/shared), on every
// trace in its traces/ and eval-traces/. It prints the Markdown table of
// docs/autoscaling.md. It is skipped unless LOADMESH_MEASURE=1: the
// shared traces are not part of a clone, and the full run takes minutes.
func TestMeasureTraces(t *testing.T) {
	if os.Getenv("LOADMESH_MEASURE") == "" {
		t.Skip("set LOADMESH_MEASURE=1 (and LOADMESH_SHARED=/path/to/shared) to measure")
	}
	planPath := os.Getenv("LOADMESH_PLAN")
	if planPath == "" {
		planPath = "../../deploy/plan.example.yaml"
	}
	data, err := os.ReadFile(planPath)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ParseSpec(data)
	if err != nil {
		t.Fatal(err)
	}
	type job struct {
		path  string
		group string
	}
	var jobs []job
	add := func(dir, group string) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.csv"))
		sort.Strings(files)
		for _, f := range files {
			jobs = append(jobs, job{f, group})
		}
	}
	only := os.Getenv("LOADMESH_ONLY")
	add(tracesDir, "shipped")
	if sh := os.Getenv("LOADMESH_SHARED"); sh != "" {
		add(filepath.Join(sh, "traces"), "shared")
		if os.Getenv("LOADMESH_SKIP_EVAL") == "" {
			add(filepath.Join(sh, "eval-traces"), "eval (held out)")
		}
	}
	var out bytes.Buffer
	for _, g := range []string{"shipped", "shared", "eval (held out)"} {
		var cs []Comparison
		for _, j := range jobs {
			if j.group != g || (only != "" && !bytes.Contains([]byte(j.path), []byte(only))) {
				continue
			}
			tr, err := ReadTraceFile(j.path)
			if err != nil {
				t.Fatal(err)
			}
			// Schedules describe known events of the shipped example
			// traces; the public traces get the same plan without them
			// (nobody wrote schedules for 1995 or 1998).
			pred := spec.WithPredictive()
			if g != "shipped" {
				pred.Schedules = nil
			}
			m := DefaultNodeModel(spec)
			r1, err := Simulate(spec.Reactive(), tr, m, SimOptions{})
			if err != nil {
				t.Fatal(err)
			}
			r2, err := Simulate(pred, tr, m, SimOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, Comparison{Trace: tr.Name, Reactive: r1, Predictive: r2})
		}
		if len(cs) == 0 {
			continue
		}
		out.WriteString("\n" + g + "\n\n")
		if err := WriteComparisonTable(&out, cs); err != nil {
			t.Fatal(err)
		}
	}
	t.Log("\n" + out.String())
}
