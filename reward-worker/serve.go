package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/bicot-rl/bicot/pkg/experts"
	"github.com/bicot-rl/bicot/pkg/logging"
	"github.com/bicot-rl/bicot/pkg/mlx"
	"github.com/bicot-rl/bicot/pkg/reward"
	"github.com/bicot-rl/bicot/pkg/startup"
)

func newServeExpertCmd(p *startup.Process) *cobra.Command {
	var (
		name, addr, models, backend string
		maxBatch                    int
	)
	cmd := &cobra.Command{
		Use:   "serve-expert",
		Short: "Serve one built-in expert over the expert HTTP/JSON protocol (docs/expert-protocol.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logging.Component(p.Log(), "serve-expert")
			if _, err := experts.Rule(name); err != nil {
				return fmt.Errorf("--expert: %w", err)
			}
			if maxBatch < 1 {
				return fmt.Errorf("--max-batch %d: must be >= 1", maxBatch)
			}
			b, err := mlx.NewBackend(backend)
			if err != nil {
				return err
			}
			m, err := experts.LoadModel(b, models, name)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", addr, err)
			}
			srv := &http.Server{Handler: reward.NewHandler(name, m, reward.HandlerOptions{MaxBatch: maxBatch}), ReadHeaderTimeout: 10 * time.Second}
			ctx := cmd.Context()
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			log.Info().Str("expert", name).Str("addr", ln.Addr().String()).Msg("serving expert")
			select {
			case err := <-errc:
				return fmt.Errorf("serve %s: %w", addr, err)
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "expert", "", "expert to serve: detector, vqa, hps or orm")
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:8301", "listen address")
	cmd.Flags().StringVar(&models, "models", "models/experts", "directory of the experts' weights")
	cmd.Flags().IntVar(&maxBatch, "max-batch", 64, "most items per request")
	cmd.Flags().StringVar(&backend, "backend", "", "gomlx backend (default $BICOT_BACKEND or go:parallelism=-1)")
	_ = cmd.MarkFlagRequired("expert")
	return cmd
}
