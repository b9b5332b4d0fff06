package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/loadtest"
)

// runCLIErr runs the loadmesh command line in-process and returns stdout
// and stderr separately.
func runCLIErr(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err = root.Execute()
	return out.String(), errOut.String(), err
}

func TestLoadtestFlagErrors(t *testing.T) {
	const u = "http://127.0.0.1:1/"
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"no URL", nil, []string{"accepts 1 arg(s), received 0"}},
		{"bad URL", []string{"127.0.0.1:8080"}, []string{`bad URL "127.0.0.1:8080"`}},
		{"ftp URL", []string{"ftp://127.0.0.1/"}, []string{"want http:// or https://"}},
		{"rate not a number", []string{u, "--rate", "fast"}, []string{`invalid argument "fast" for "--rate"`}},
		{"negative rate", []string{u, "--rate", "-5"}, []string{"--rate -5"}},
		{"absurd rate", []string{u, "--rate", "5e6"}, []string{"--rate 5e+06 is above 200000 req/s"}},
		{"absurd duration", []string{u, "--duration", "1000h"}, []string{"--duration 1000h0m0s"}},
		{"bad ramp", []string{u, "--ramp", "soon"}, []string{`bad --ramp "soon"`}},
		{"bad stage", []string{u, "--ramp", "100:30s,fast:1m"}, []string{`stage 2 "fast:1m"`}},
		{"ramp longer than the run", []string{u, "--ramp", "1m", "--duration", "10s"}, []string{"--ramp takes 1m0s, longer than --duration 10s"}},
		{"staged ramp and rate", []string{u, "--ramp", "100:1s", "--rate", "50"}, []string{"--rate and a staged --ramp both set the rate"}},
		{"bad header", []string{u, "-H", "NoColon"}, []string{`bad --header "NoColon"`}},
		{"missing body file", []string{u, "--body", "@/nonexistent/body"}, []string{"--body: open /nonexistent/body"}},
		{"two problems", []string{"http://", "--connections", "0"}, []string{`bad URL "http://"`, "--connections 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCLIErr(t, append([]string{"loadtest"}, tt.args...)...)
			if err == nil {
				t.Fatalf("no error; stdout %q", out)
			}
			msg := oneLine(err)
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is not one line", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing on an error", out)
			}
		})
	}
}

func TestLoadtestCLI(t *testing.T) {
	var got http.Header
	var gotBody string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got == nil {
			got = r.Header.Clone()
			var b bytes.Buffer
			b.ReadFrom(r.Body)
			gotBody = b.String()
		}
		w.Header().Set(loadtest.NodeHeader, "node-a")
	}))
	defer ts.Close()

	// --json: one JSON document on stdout, nothing else; the target line
	// on stderr; a staged ramp sets rate and duration.
	out, errOut, err := runCLIErr(t, "loadtest", ts.URL+"/p", "--ramp", "100:200ms,100:300ms", "--json",
		"-X", "POST", "-H", "X-Test: yes", "--body", "hello")
	if err != nil {
		t.Fatal(err)
	}
	var rep loadtest.Report
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&rep); err != nil || dec.More() {
		t.Fatalf("stdout is not one JSON document (%v):\n%s", err, out)
	}
	if rep.Method != "POST" || rep.Load.Rate != 100 || rep.Load.DurationSeconds != 0.5 || len(rep.Load.Ramp) != 2 ||
		rep.ExpectedRequests != 40 || rep.Requests == 0 || len(rep.Nodes) != 1 || rep.Nodes[0].Node != "node-a" {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(errOut, "loadtest: POST "+ts.URL+"/p at 100 req/s for 500ms") {
		t.Errorf("stderr %q does not name the target", errOut)
	}
	if got.Get("X-Test") != "yes" || gotBody != "hello" {
		t.Errorf("server got headers %v body %q", got, gotBody)
	}

	// Text: the report's sections.
	out, _, err = runCLIErr(t, "loadtest", ts.URL, "--rate", "200", "--duration", "200ms")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Target      GET " + ts.URL, "Latency     min", "Latency histogram", "Errors by kind\n  none",
		"Spread over nodes (X-Loadmesh-Node)", "node-a"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}
