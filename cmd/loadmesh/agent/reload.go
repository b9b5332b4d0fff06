package agent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"time"

	"github.com/loadmesh/loadmesh/transport"
)

// ReloadReport says what a Reload did.
type ReloadReport struct {
	// Applied describes each setting that changed and is now in force, as
	// "flag: old → new" (certificates by serial number).
	Applied []string
	// Restart names the flags whose new value takes effect only after a
	// restart; until then the node keeps the value it started with.
	Restart []string
}

// liveFlags are the settings Reload can change in a running node, given
// that the feature they tune was on at start (a rate limit, ingress or
// API TLS, a backend with health checks); turning a feature on or off
// needs a restart. Everything else needs a restart. The TLS files are read
// again on every reload, so a certificate renewed in place is taken up;
// --tls-ca and --tls-cert are replaced together (see reloadPeerTLS), which
// is how the cluster CA is rotated.
var liveFlags = map[string]bool{
	"tls-cert": true, "tls-key": true, "tls-ca": true,
	"http-tls-cert": true, "http-tls-key": true,
	"api-tls-cert": true, "api-tls-key": true,
	"rate-limit": true, "rate-burst": true,
	"max-body-bytes": true, "read-timeout": true,
	"max-conns": true, "max-conns-per-client": true,
	"max-inflight": true, "max-queue": true, "queue-target": true, "queue-interval": true,
	"health-interval": true, "health-timeout": true, "health-rise": true, "health-fall": true,
	"shutdown-grace": true,
}

// Reload applies cfg, a configuration read again from the node's sources
// (SIGHUP): the settings in liveFlags take effect at once (new connections
// and requests get them; those under way keep theirs), and the others
// that differ from the running ones are listed in the report's Restart.
// A cfg that does not validate, or TLS files that cannot be loaded or do
// not verify, change nothing and return an error. Safe to call while the
// node serves; reloads run one at a time.
func (a *Agent) Reload(cfg Config) (ReloadReport, error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	var rep ReloadReport
	if a.liveCluster.Load() == nil || a.Draining() {
		return rep, errors.New("reload: the agent is not running")
	}
	if err := cfg.Validate(); err != nil {
		return rep, err
	}
	old := a.live.Load()
	live := func(flag string) bool {
		switch flag {
		case "tls-cert", "tls-key", "tls-ca":
			return a.deps.TLS == nil && a.cfg.TLSCA != "" && cfg.TLSCA != "" && a.joined == nil
		case "http-tls-cert", "http-tls-key":
			return a.ingressCert.Load() != nil && cfg.HTTPTLSCert != ""
		case "api-tls-cert", "api-tls-key":
			return a.sec.apiPair.Load() != nil && cfg.APITLSCert != ""
		case "rate-limit", "rate-burst":
			return a.limits.rate != nil && cfg.RateLimit > 0
		case "max-inflight", "max-queue", "queue-target", "queue-interval":
			return a.limits.admission != nil
		case "health-interval", "health-timeout", "health-rise", "health-fall":
			return a.health != nil && cfg.HealthPath == a.cfg.HealthPath
		}
		return liveFlags[flag]
	}

	// The new effective configuration: live settings from cfg, the rest as
	// the node started.
	next := *old
	nv, sv, cv := reflect.ValueOf(&next).Elem(), reflect.ValueOf(a.cfg), reflect.ValueOf(cfg)
	for i := range nv.NumField() {
		flag := reflect.TypeFor[Config]().Field(i).Tag.Get("yaml")
		if flag == "" || flag == "-" {
			continue
		}
		switch {
		case live(flag):
			nv.Field(i).Set(cv.Field(i))
		case !sameValue(sv.Field(i), cv.Field(i)):
			rep.Restart = append(rep.Restart, flag)
		}
	}

	// Load everything that can fail before changing anything.
	var nodeCert, nodeKey, caBundle []byte
	if live("tls-cert") {
		var err error
		if nodeCert, err = os.ReadFile(next.TLSCert); err != nil {
			return ReloadReport{}, fmt.Errorf("--tls-cert: %w", err)
		}
		if nodeKey, err = os.ReadFile(next.TLSKey); err != nil {
			return ReloadReport{}, fmt.Errorf("--tls-key: %w", err)
		}
		if caBundle, err = os.ReadFile(next.TLSCA); err != nil {
			return ReloadReport{}, fmt.Errorf("--tls-ca: %w", err)
		}
	}
	var ingressPair, apiPair *tls.Certificate
	if live("http-tls-cert") {
		pair, err := tls.LoadX509KeyPair(next.HTTPTLSCert, next.HTTPTLSKey)
		if err != nil {
			return ReloadReport{}, fmt.Errorf("ingress tls: %w", err)
		}
		ingressPair = &pair
	}
	if live("api-tls-cert") {
		pair, err := tls.LoadX509KeyPair(next.APITLSCert, next.APITLSKey)
		if err != nil {
			return ReloadReport{}, fmt.Errorf("api tls: %w", err)
		}
		apiPair = &pair
	}
	// The node certificate goes first: it is the one change that can
	// still be refused (it must chain to the cluster CA and name this
	// node), and nothing else has changed yet.
	if nodeCert != nil {
		applied, err := a.reloadPeerTLS(caBundle, nodeCert, nodeKey)
		if err != nil {
			return ReloadReport{}, err
		}
		rep.Applied = append(rep.Applied, applied...)
	}
	if ingressPair != nil {
		if prev := a.ingressCert.Load(); !bytes.Equal(prev.Certificate[0], ingressPair.Certificate[0]) {
			a.ingressCert.Store(ingressPair)
			rep.Applied = append(rep.Applied, "http-tls-cert: "+certChange(prev.Leaf, ingressPair.Leaf))
		}
	}
	if apiPair != nil {
		if prev := a.sec.apiPair.Load(); !bytes.Equal(prev.Certificate[0], apiPair.Certificate[0]) {
			a.sec.apiPair.Store(apiPair)
			a.sec.apiCert.Store(apiPair.Leaf)
			rep.Applied = append(rep.Applied, "api-tls-cert: "+certChange(prev.Leaf, apiPair.Leaf))
		}
	}

	changed := func(flags ...string) bool {
		was, now := reflect.ValueOf(*old), reflect.ValueOf(next)
		did := false
		for _, flag := range flags {
			i := configField(flag)
			if !sameValue(was.Field(i), now.Field(i)) {
				rep.Applied = append(rep.Applied, fmt.Sprintf("%s: %v → %v", flag, was.Field(i).Interface(), now.Field(i).Interface()))
				did = true
			}
		}
		return did
	}
	l := a.limits
	if live("rate-limit") && changed("rate-limit", "rate-burst") {
		if err := l.rate.SetRate(next.RateLimit, next.RateBurst); err != nil {
			a.log.Error("reload: rate limit", "error", err) // validated above; not expected
		}
	}
	if l.guard != nil && changed("max-body-bytes", "read-timeout") {
		l.guard.SetLimits(transport.GuardConfig{MaxBodyBytes: next.MaxBodyBytes, BodyTimeout: next.ReadTimeout})
	}
	if changed("max-conns", "max-conns-per-client") {
		if err := l.conns.SetLimits(transport.ConnLimitConfig{MaxConns: next.MaxConns, MaxConnsPerClient: next.MaxConnsPerClient}); err != nil {
			a.log.Error("reload: connection limits", "error", err)
		}
	}
	if live("max-inflight") && changed("max-inflight", "max-queue", "queue-target", "queue-interval") {
		if err := l.admission.SetConfig(a.admissionConfig(next)); err != nil {
			a.log.Error("reload: admission queue", "error", err)
		}
	}
	if live("health-interval") && changed("health-interval", "health-timeout", "health-rise", "health-fall") {
		hc := transport.HealthConfig{Interval: next.HealthInterval, Timeout: next.HealthTimeout, Rise: next.HealthRise, Fall: next.HealthFall}
		if err := a.health.Reconfigure(hc); err != nil {
			a.log.Error("reload: health checks", "error", err)
		}
	}
	changed("shutdown-grace") // read from a.live when shutting down
	a.live.Store(&next)
	if a.renewSoon() {
		// A node whose certificate the cluster issued has no certificate
		// files to read again: it renews now, taking the servers' trust
		// bundle with the new certificate (a CA rotation).
		rep.Applied = append(rep.Applied, "node certificate: renewal from the cluster requested")
	}
	return rep, nil
}

// admissionConfig is the admission queue's configuration for cfg.
func (a *Agent) admissionConfig(cfg Config) transport.AdmissionConfig {
	inflight := cfg.MaxInflight
	if inflight == 0 {
		// The scheduler already keeps this node's own picks within
		// --capacity; the hard ceiling leaves room for what peers
		// forward, so that only real overload queues and sheds.
		inflight = 2 * cfg.Capacity
	}
	return transport.AdmissionConfig{MaxInflight: inflight, MaxQueue: cfg.MaxQueue, Target: cfg.QueueTarget, Interval: cfg.QueueInterval}
}

// configField is the index of the Config field of a flag.
func configField(flag string) int {
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("yaml") == flag {
			return i
		}
	}
	panic("no Config field for flag " + flag)
}

// sameValue compares two Config field values; empty and nil lists are the
// same.
func sameValue(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

// certChange describes a certificate replaced by another.
func certChange(prev, next *x509.Certificate) string {
	serial := func(c *x509.Certificate) string {
		if c == nil {
			return "?"
		}
		return fmt.Sprintf("%x", c.SerialNumber)
	}
	s := "serial " + serial(prev) + " → " + serial(next)
	if next != nil {
		s += ", expires " + next.NotAfter.UTC().Format(time.DateOnly)
	}
	return s
}
