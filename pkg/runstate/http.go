package runstate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// HTTP endpoint of a node:
//
//	POST /raft/apply    body: Command     -> 200 Result (a rejection is a Result with error set)
//	POST /raft/members  body: memberChange -> 204
//	GET  /raft/leader                      -> 200 LeaderInfo
//	GET  /raft/state                       -> 200 State (the leader's, after a barrier, when asked the leader)
//
// Any node accepts /raft/apply and forwards it to the leader itself. A request already forwarded
// (header HeaderForwarded) is applied only by the leader, never forwarded again, so a stale view of
// who leads cannot bounce a command around. Every response names the leader's HTTP address in
// HeaderLeader when it is known, so clients go straight there next time.
const (
	HeaderForwarded = "X-Bicot-Forwarded"
	HeaderLeader    = "X-Bicot-Leader"
	maxBody         = 16 << 20
)

// LeaderInfo is a node's view of leadership.
type LeaderInfo struct {
	NodeID     string `json:"node_id"`
	IsLeader   bool   `json:"is_leader"`
	LeaderID   string `json:"leader_id"`
	LeaderRaft string `json:"leader_raft"`
	LeaderHTTP string `json:"leader_http"`
}

type errorBody struct {
	Error string `json:"error"`
}

func (n *Node) leaderInfo() LeaderInfo {
	id, addr := n.Leader()
	return LeaderInfo{NodeID: n.cfg.ID, IsLeader: n.IsLeader(), LeaderID: id, LeaderRaft: addr, LeaderHTTP: n.LeaderHTTP()}
}

func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /raft/apply", n.handleApply)
	mux.HandleFunc("POST /raft/members", n.handleMembers)
	mux.HandleFunc("GET /raft/leader", func(w http.ResponseWriter, r *http.Request) {
		n.reply(w, http.StatusOK, n.leaderInfo())
	})
	mux.HandleFunc("GET /raft/state", n.handleState)
	return mux
}

func (n *Node) reply(w http.ResponseWriter, code int, v any) {
	if l := n.LeaderHTTP(); l != "" {
		w.Header().Set(HeaderLeader, l)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func (n *Node) handleApply(w http.ResponseWriter, r *http.Request) {
	var cmd Command
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&cmd); err != nil {
		n.reply(w, http.StatusBadRequest, errorBody{fmt.Sprintf("decode command: %v", err)})
		return
	}
	if err := cmd.Validate(); err != nil {
		n.reply(w, http.StatusBadRequest, errorBody{err.Error()})
		return
	}
	var res Result
	var err error
	if r.Header.Get(HeaderForwarded) != "" {
		if !n.IsLeader() {
			n.reply(w, http.StatusServiceUnavailable, errorBody{fmt.Sprintf("node %s is not the leader", n.cfg.ID)})
			return
		}
		res, err = n.applyLeader(r.Context(), cmd)
	} else {
		res, err = n.Apply(r.Context(), cmd)
	}
	if err != nil && !errors.Is(err, ErrRejected) {
		n.reply(w, http.StatusServiceUnavailable, errorBody{err.Error()})
		return
	}
	if err != nil && res.Error == "" {
		n.reply(w, http.StatusBadRequest, errorBody{err.Error()})
		return
	}
	n.reply(w, http.StatusOK, res)
}

func (n *Node) handleMembers(w http.ResponseWriter, r *http.Request) {
	var m memberChange
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&m); err != nil {
		n.reply(w, http.StatusBadRequest, errorBody{fmt.Sprintf("decode membership change: %v", err)})
		return
	}
	var err error
	if r.Header.Get(HeaderForwarded) != "" {
		if !n.IsLeader() {
			n.reply(w, http.StatusServiceUnavailable, errorBody{fmt.Sprintf("node %s is not the leader", n.cfg.ID)})
			return
		}
		err = n.membershipLeader(r.Context(), m)
	} else {
		err = n.membership(r.Context(), m)
	}
	if err != nil {
		n.reply(w, http.StatusServiceUnavailable, errorBody{err.Error()})
		return
	}
	n.reply(w, http.StatusNoContent, nil)
}

func (n *Node) handleState(w http.ResponseWriter, r *http.Request) {
	if n.IsLeader() {
		if err := n.Barrier(r.Context()); err != nil {
			n.reply(w, http.StatusServiceUnavailable, errorBody{err.Error()})
			return
		}
	}
	n.reply(w, http.StatusOK, n.State())
}

// forward sends cmd to the leader at addr as an already-forwarded request.
func (n *Node) forward(ctx context.Context, addr string, cmd Command) (Result, error) {
	var res Result
	err := postJSON(ctx, n.httpCl, n.cfg.TLS.Scheme(), addr, "/raft/apply", cmd, true, &res)
	return res, err
}

func (n *Node) forwardMembership(ctx context.Context, addr string, m memberChange) error {
	return postJSON(ctx, n.httpCl, n.cfg.TLS.Scheme(), addr, "/raft/members", m, true, nil)
}

// httpError is a non-2xx answer from a node.
type httpError struct {
	Code   int
	Msg    string
	Leader string
}

func (e *httpError) Error() string { return fmt.Sprintf("http %d: %s", e.Code, e.Msg) }

func baseURL(scheme, addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/")
	}
	return scheme + "://" + addr
}

// postJSON posts in as JSON and decodes a 200 answer into out. A 400 answer is a rejection
// (wrapping ErrRejected); any other failure is an error worth retrying elsewhere.
func postJSON(ctx context.Context, hc *http.Client, scheme, addr, path string, in any, forwarded bool, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("%w: encode request: %v", ErrRejected, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL(scheme, addr)+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("request to %s: %w", addr, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if forwarded {
		req.Header.Set(HeaderForwarded, "1")
	}
	return doJSON(hc, req, out)
}

func doJSON(hc *http.Client, req *http.Request, out any) error {
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent:
		if out == nil || resp.StatusCode == http.StatusNoContent {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL, err)
		}
		return nil
	default:
		var eb errorBody
		_ = json.Unmarshal(data, &eb)
		if eb.Error == "" {
			eb.Error = strings.TrimSpace(string(data))
		}
		he := &httpError{Code: resp.StatusCode, Msg: eb.Error, Leader: resp.Header.Get(HeaderLeader)}
		if resp.StatusCode == http.StatusBadRequest {
			return fmt.Errorf("%w: %s %s: %v", ErrRejected, req.Method, req.URL, he)
		}
		return fmt.Errorf("%s %s: %w", req.Method, req.URL, he)
	}
}

func jsonBody(in any) (io.Reader, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("%w: encode request: %v", ErrRejected, err)
	}
	return bytes.NewReader(b), nil
}
