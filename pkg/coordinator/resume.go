package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"

	"github.com/bicot-rl/bicot/pkg/ckpt"
	"github.com/bicot-rl/bicot/pkg/config"
	"github.com/bicot-rl/bicot/pkg/runstate"
	"github.com/bicot-rl/bicot/pkg/store"
)

// Resume is what a run continues from: its newest committed checkpoint and the run state the
// coordinators start with.
type Resume struct {
	Manifest ckpt.Manifest
	// Config is the run config stored in the checkpoint.
	Config config.Config
	// State is the run state as of the checkpoint: step = the checkpoint's step + 1, its policy
	// version, the data cursor after the checkpoint's step, groups of later steps (staleness > 0)
	// still in flight, no leases and no members.
	State runstate.State
}

// Checkpoint part names the learner writes (pkg/learnrole) that resuming reads.
const (
	partConfig = "config"
)

// LoadResume finds the run's newest good checkpoint in st (ckpt.Latest: a corrupted or partial
// newest checkpoint is skipped with a warning naming it, and the previous one is used) and
// builds the run state to continue from. The checkpoint must hold the coordinator's run-state
// snapshot (laptop mode always stores it; `learner run` does with --coordinators).
func LoadResume(ctx context.Context, st store.Store, run string, log zerolog.Logger) (Resume, error) {
	m, err := ckpt.Latest(ctx, st, run, ckpt.WithLogger(log))
	if err != nil {
		return Resume{}, fmt.Errorf("resume %s: %w", run, err)
	}
	var r Resume
	r.Manifest = m
	rs, err := ckpt.Load(ctx, st, m, ckpt.PartRunState)
	if err != nil {
		return Resume{}, fmt.Errorf("resume %s from step %d: run-state snapshot: %w", run, m.Step, err)
	}
	snap, err := runstate.DecodeSnapshot(bytes.NewReader(rs))
	if err != nil {
		return Resume{}, fmt.Errorf("resume %s from step %d: %w", run, m.Step, err)
	}
	if snap.RunID != run {
		return Resume{}, fmt.Errorf("resume %s from step %d: the snapshot is of run %q", run, m.Step, snap.RunID)
	}
	r.Config = config.Default()
	if b, err := ckpt.Load(ctx, st, m, partConfig); err == nil {
		if err := config.Parse(b, &r.Config); err != nil {
			return Resume{}, fmt.Errorf("resume %s from step %d: stored config: %w", run, m.Step, err)
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return Resume{}, fmt.Errorf("resume %s from step %d: stored config: %w", run, m.Step, err)
	}
	r.State = ResumeState(snap, m)
	// The snapshot was taken before the step was reported; the run's clock says whether the
	// step ended the run (its time budget).
	p, err := ckpt.LoadProgress(ctx, st, m)
	if err != nil {
		return Resume{}, fmt.Errorf("resume %s: %w", run, err)
	}
	r.State.Ended = p.Final
	log.Info().Str("run", run).Int64("checkpoint_step", m.Step).Int64("next_step", r.State.Step).
		Int64("version", r.State.PolicyVersion).Int64("epoch", r.State.Cursor.Epoch).Int64("offset", r.State.Cursor.Offset).
		Msg("resuming from checkpoint")
	return r, nil
}

// ResumeState turns the run-state snapshot stored with checkpoint m (taken after m's step was
// trained, before the coordinator recorded it) into the state the run continues from: m's step
// and everything before it learned, the policy at m's version, the cursor where it was (with
// staleness 0 exactly after m's step's prompts, as in an uninterrupted run). Groups of later
// steps stay in flight, marked dispatched with the next attempt number, so they are handed out
// again under new message ids (the interrupted run's learner may have consumed their samples).
func ResumeState(snap runstate.State, m ckpt.Manifest) runstate.State {
	s := snap.Clone()
	s.Step = m.Step + 1
	s.PolicyVersion = m.PolicyVersion
	for k, g := range s.Groups {
		if g.Step <= m.Step {
			delete(s.Groups, k)
			continue
		}
		g.Status = runstate.GroupDispatched
		g.Attempts++
		s.Groups[k] = g
	}
	for id, step := range s.Batches {
		if step <= m.Step {
			delete(s.Batches, id)
		}
	}
	var cps []runstate.Checkpoint
	for _, c := range s.Checkpoints {
		if c.Step < m.Step {
			cps = append(cps, c)
		}
	}
	s.Checkpoints = append(cps, runstate.Checkpoint{Step: m.Step, Key: m.Key, PolicyVersion: m.PolicyVersion,
		EvalScore: m.Metrics["eval"], Time: m.Created})
	s.Workers = map[string]runstate.Lease{}
	s.Members = map[string]runstate.Member{}
	s.Applied = 1
	return s
}

// SeedRaft prepares an empty raft data directory so that a runstate node opened on it (with
// NodeConfig.DataDir = dir) starts from st: it writes st as the cluster's first snapshot (index 1,
// term 1) with servers as the voters. Every initial coordinator of a resumed cluster is seeded
// with the same state and servers, which is what a bootstrap with identical configurations is.
// A directory that already holds raft state is refused (move it aside first).
func SeedRaft(dir string, servers []runstate.Peer, st runstate.State) error {
	if len(servers) == 0 {
		return errors.New("seed raft: no servers")
	}
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); err == nil {
		return fmt.Errorf("seed raft: %s already holds raft state", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("seed raft: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	if err != nil {
		return fmt.Errorf("seed raft: snapshot store: %w", err)
	}
	if l, err := snaps.List(); err != nil || len(l) > 0 {
		return fmt.Errorf("seed raft: %s already holds snapshots (%v)", dir, err)
	}
	var conf raft.Configuration
	for _, p := range servers {
		if p.ID == "" || p.RaftAddr == "" {
			return fmt.Errorf("seed raft: server %+v needs an id and a raft address", p)
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	// The snapshot's legacy peer list is encoded through a transport; any will do.
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, 1, 1, conf, 1, trans)
	if err != nil {
		return fmt.Errorf("seed raft: %w", err)
	}
	if err := runstate.EncodeSnapshot(sink, st); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("seed raft: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("seed raft: %w", err)
	}
	return nil
}

// MoveAside renames an existing directory to <dir>.before-resume-<time> so a resumed run starts
// from a fresh raft directory without destroying the old one. A missing dir is fine.
func MoveAside(dir string) (string, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	to := fmt.Sprintf("%s.before-resume-%s", dir, time.Now().UTC().Format("20060102-150405.000"))
	if err := os.Rename(dir, to); err != nil {
		return "", fmt.Errorf("move %s aside: %w", dir, err)
	}
	return to, nil
}
