//go:build linux

package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// To talk to an agent from inside its host's namespace (the host may be
// cut off from the test), the test binary runs itself there as a one-shot
// HTTP client: `ip netns exec NS netns.test` with clientVar set to the
// request. TestMain sees the variable, sends the request and prints the
// answer as JSON, and runs no test.
const clientVar = "LOADMESH_NETNS_CLIENT"

type clientRequest struct {
	Method, URL, Token string
	Body               []byte
}

type clientAnswer struct {
	Code int
	Body []byte
	Err  string
}

// clientMain is the one-shot client's main.
func clientMain(spec string) int {
	var req clientRequest
	var ans clientAnswer
	if err := json.Unmarshal([]byte(spec), &req); err != nil {
		ans.Err = "bad request spec: " + err.Error()
	} else {
		ans.Code, ans.Body, ans.Err = send(req)
	}
	json.NewEncoder(os.Stdout).Encode(ans)
	return 0
}

func send(req clientRequest) (int, []byte, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var rd io.Reader
	if req.Body != nil {
		rd = bytes.NewReader(req.Body)
	}
	r, err := http.NewRequestWithContext(ctx, req.Method, req.URL, rd)
	if err != nil {
		return 0, nil, err.Error()
	}
	if req.Token != "" {
		r.Header.Set("Authorization", "Bearer "+req.Token)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, b, err.Error()
	}
	return resp.StatusCode, b, ""
}

// doInside sends one request from inside ns with the operator token.
func doInside(ns, method, url string, body []byte) (int, []byte, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, nil, err
	}
	spec, _ := json.Marshal(clientRequest{Method: method, URL: url, Token: bedToken, Body: body})
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(10*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, self)
	cmd.Env = append(os.Environ(), clientVar+"="+string(spec))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s from inside %s: %v: %s", method, url, ns, err, strings.TrimSpace(stderr.String()))
	}
	var ans clientAnswer
	if err := json.Unmarshal(out, &ans); err != nil {
		return 0, nil, fmt.Errorf("%s %s from inside %s: %v: %q", method, url, ns, err, out)
	}
	if ans.Err != "" {
		return ans.Code, ans.Body, errors.New(ans.Err)
	}
	return ans.Code, ans.Body, nil
}
