package transport

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// ConnLimitConfig bounds concurrent client connections.
type ConnLimitConfig struct {
	// MaxConns bounds the connections open at once. 0: no limit.
	MaxConns int
	// MaxConnsPerClient bounds the connections of one client key (an IP
	// address; an IPv6 /64). 0: no limit.
	MaxConnsPerClient int
}

// Validate reports every problem with c.
func (c ConnLimitConfig) Validate() error {
	var errs []error
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("max connections %d is negative", c.MaxConns))
	}
	if c.MaxConnsPerClient < 0 {
		errs = append(errs, fmt.Errorf("max connections per client %d is negative", c.MaxConnsPerClient))
	}
	return errors.Join(errs...)
}

// ConnLimiter counts open connections in total and per client key. It
// knows nothing of the protocol: Listener applies it to a net.Listener,
// and a QUIC or other server can call Acquire and Release itself. Safe for
// concurrent use.
type ConnLimiter struct {
	mu    sync.Mutex
	cfg   ConnLimitConfig
	total int
	// per counts every client's connections, whatever the limits, so
	// that SetLimits can turn the per-client limit on at any time.
	per     map[ClientKey]int
	metrics *connLimitMetrics
}

// NewConnLimiter returns a limiter; reg (optional) receives its metrics.
func NewConnLimiter(cfg ConnLimitConfig, reg prometheus.Registerer) (*ConnLimiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &ConnLimiter{cfg: cfg, per: map[ClientKey]int{}}
	c.metrics = newConnLimitMetrics(reg, c)
	return c, nil
}

// Acquire counts a new connection of client k, or reports false (and
// counts nothing) when a limit is reached. Each successful Acquire must be
// matched by one Release with the same key.
func (c *ConnLimiter) Acquire(k ClientKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.MaxConns > 0 && c.total >= c.cfg.MaxConns {
		c.metrics.rejected[0].Inc()
		return false
	}
	if c.cfg.MaxConnsPerClient > 0 && c.per[k] >= c.cfg.MaxConnsPerClient {
		c.metrics.rejected[1].Inc()
		return false
	}
	c.per[k]++
	c.total++
	return true
}

// Release uncounts a connection of k.
func (c *ConnLimiter) Release(k ClientKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if n := c.per[k] - 1; n > 0 {
		c.per[k] = n
	} else {
		delete(c.per, k) // the map holds only clients with connections
	}
}

// SetLimits replaces the limits. Connections already open stay open even
// if they are now over a limit; new ones are counted against the new
// limits. Safe for concurrent use.
func (c *ConnLimiter) SetLimits(cfg ConnLimitConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	c.cfg = cfg
	c.mu.Unlock()
	return nil
}

// Open is the number of connections counted.
func (c *ConnLimiter) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Listener wraps ln: a connection over a limit is closed as soon as it is
// accepted (the client sees the connection close before any answer; an
// HTTP answer is not possible before the request, and under TLS not before
// the handshake). Accept never blocks on a refused connection.
func (c *ConnLimiter) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, c: c}
}

type limitListener struct {
	net.Listener
	c *ConnLimiter
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		k := connKey(conn.RemoteAddr())
		if !l.c.Acquire(k) {
			conn.Close()
			continue
		}
		return &limitedConn{Conn: conn, c: l.c, key: k}, nil
	}
}

// connKey is the client key of a connection's remote address.
func connKey(a net.Addr) ClientKey {
	switch a := a.(type) {
	case *net.TCPAddr:
		return KeyFromAddr(a.AddrPort().Addr())
	case *net.UDPAddr:
		return KeyFromAddr(a.AddrPort().Addr())
	case nil:
		return ClientKey{}
	}
	return KeyFromRemoteAddr(a.String())
}

type limitedConn struct {
	net.Conn
	c      *ConnLimiter
	key    ClientKey
	closed atomic.Bool
}

func (c *limitedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.c.Release(c.key)
	}
	return c.Conn.Close()
}
