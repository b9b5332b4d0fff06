package agent

import (
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/provision"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/store"
)

// addJoinToken gives a hook that starts nodes (scale_out, replace) what
// the new nodes need to join without any other secret: a fresh join
// token with one use per node, the peer addresses to request their
// certificates from and the cluster CA certificate. The token is created
// through Raft and audited like any token; it lives as long as the hook
// and the provisioning may take (at most 24h). Without a CA key on this
// leader no token is made: the nodes could not get a certificate with it.
func (h *autoscalerHook) addJoinToken(req *provision.Request, hk autoscale.HookRequest, provisionTimeout time.Duration, now time.Time) {
	a := h.a
	if (req.Kind != provision.KindScaleOut && req.Kind != provision.KindReplace) || a.cfg.TLSCAKey == "" || a.cfg.TLSCA == "" {
		return
	}
	caPEM, err := os.ReadFile(a.cfg.TLSCA)
	if err != nil {
		a.log.Warn("hook request without join token", "id", req.ID, "error", err)
		return
	}
	hookTime := time.Duration(1+hk.Hook.Retries) * (hk.Hook.Timeout.D() + hk.Hook.FirstBackoff())
	ttl := min(max(hookTime+provisionTimeout, time.Hour), maxJoinTokenTTL)
	a.pruneJoinTokens()
	secret, err := NewToken()
	if err != nil {
		a.log.Warn("hook request without join token", "id", req.ID, "error", err)
		return
	}
	name := "hook-" + req.ID
	if len(name) > 64 {
		name = name[:64]
	}
	tok := tokenRecord(secret, name, store.RoleJoin, now.UTC(), "autoscaler")
	tok.Expires, tok.Uses = now.UTC().Add(ttl), max(req.Count, 1)
	if _, err := a.apply(store.Command{Op: store.OpTokenCreate, Token: &tok, Time: now.UTC(), Who: "autoscaler",
		Why: fmt.Sprintf("join token for the %s hook %s", req.Kind, req.ID)}); err != nil {
		a.log.Warn("hook request without join token", "id", req.ID, "error", err)
		return
	}
	req.JoinToken = secret
	req.CACert = string(caPEM)
	for _, m := range a.cluster.Members() {
		if m.Status == cluster.StatusAlive && m.Addresses.Peer != "" {
			req.JoinServers = append(req.JoinServers, m.Addresses.Peer)
		}
	}
	slices.Sort(req.JoinServers)
}
