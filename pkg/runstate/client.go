package runstate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/secure"
)

// Client talks to a coordinator cluster given any list of its HTTP addresses. It remembers the
// leader (nodes name it in every answer) and goes there first; when that fails it tries every
// address in turn and backs off, until the context ends. Workers need nothing else to follow
// failovers.
type Client struct {
	addrs  []string
	scheme string
	rt     http.RoundTripper
	tr     *http.Transport
	log    zerolog.Logger

	mu     sync.Mutex
	leader string
}

// DefaultClientTimeout bounds a call whose context has no deadline: long enough to ride out an
// election, short enough to notice a dead cluster.
const DefaultClientTimeout = 15 * time.Second

// ClientOptions guard a client's calls: the cluster's bearer token and TLS (a CA that verifies
// the nodes, a client certificate for nodes that require one).
type ClientOptions struct {
	Token string
	TLS   secure.TLSFiles
}

// NewClient returns a client for the coordinators at addrs ("host:port" or "http://host:port").
func NewClient(addrs []string, log zerolog.Logger) (*Client, error) {
	return NewClientWith(addrs, ClientOptions{}, log)
}

// NewClientWith is NewClient for a cluster that requires a token or TLS.
func NewClientWith(addrs []string, o ClientOptions, log zerolog.Logger) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("runstate client: no coordinator addresses")
	}
	for _, a := range addrs {
		if a == "" {
			return nil, fmt.Errorf("runstate client: empty coordinator address in %q", addrs)
		}
	}
	rt, tr, err := secure.Transport(o.TLS, o.Token)
	if err != nil {
		return nil, fmt.Errorf("runstate client: %w", err)
	}
	return &Client{
		addrs:  append([]string(nil), addrs...),
		scheme: o.TLS.Scheme(),
		rt:     rt,
		tr:     tr,
		log:    logging.Component(log, "runstate-client"),
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Leader returns the leader's HTTP address as last learned, "" before the first call.
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *Client) candidates() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.addrs)+1)
	if c.leader != "" {
		out = append(out, c.leader)
	}
	for _, a := range c.addrs {
		if a != c.leader {
			out = append(out, a)
		}
	}
	return out
}

func (c *Client) learn(resp *http.Response) {
	if l := resp.Header.Get(HeaderLeader); l != "" {
		c.mu.Lock()
		if c.leader != l {
			c.log.Debug().Str("leader", l).Msg("following leader")
		}
		c.leader = l
		c.mu.Unlock()
	}
}

// do runs one request against the candidates until one answers, backing off between rounds.
func (c *Client) do(ctx context.Context, what string, mk func(ctx context.Context, addr string) (*http.Request, error), out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultClientTimeout)
		defer cancel()
	}
	var last error
	for backoff := 25 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		for _, addr := range c.candidates() {
			req, err := mk(ctx, addr)
			if err != nil {
				return err
			}
			err = c.doOne(req, out)
			if err == nil || errors.Is(err, ErrRejected) {
				return err
			}
			last = err
			c.mu.Lock()
			if c.leader == addr {
				c.leader = ""
			}
			c.mu.Unlock()
			if ctx.Err() != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: no coordinator answered: %w (last error: %v)", what, ctx.Err(), last)
		case <-time.After(backoff):
		}
	}
}

func (c *Client) doOne(req *http.Request, out any) error {
	// Wrap the transport call so the leader hint is learned from every answer, errors included.
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := c.rt.RoundTrip(r)
		if err == nil {
			c.learn(resp)
		}
		return resp, err
	})}
	return doJSON(hc, req, out)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Apply commits cmd on the cluster. A rejection returns the Result and an error wrapping
// ErrRejected; it is not retried.
func (c *Client) Apply(ctx context.Context, cmd Command) (Result, error) {
	if err := cmd.Validate(); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	var res Result
	err := c.do(ctx, "apply "+string(cmd.Type), func(ctx context.Context, addr string) (*http.Request, error) {
		res = Result{}
		return jsonRequest(ctx, baseURL(c.scheme, addr)+"/raft/apply", cmd)
	}, &res)
	if err != nil {
		return res, err
	}
	return res, res.Err()
}

// State returns the run state as the leader has it (a node answers with its own state after a
// barrier when it leads; the client asks the leader first).
func (c *Client) State(ctx context.Context) (State, error) {
	var st State
	err := c.do(ctx, "state", func(ctx context.Context, addr string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, baseURL(c.scheme, addr)+"/raft/state", nil)
	}, &st)
	return st.Clone(), err
}

// LeaderInfo asks the cluster who leads.
func (c *Client) LeaderInfo(ctx context.Context) (LeaderInfo, error) {
	var li LeaderInfo
	err := c.do(ctx, "leader", func(ctx context.Context, addr string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, baseURL(c.scheme, addr)+"/raft/leader", nil)
	}, &li)
	return li, err
}

func jsonRequest(ctx context.Context, url string, in any) (*http.Request, error) {
	body, err := jsonBody(in)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return nil, fmt.Errorf("request to %s: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}
