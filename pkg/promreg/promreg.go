// Package promreg registers Prometheus collectors so that a role started again in the same
// process (laptop mode restarts the learner; tests build several workers) keeps counting in the
// series it registered before instead of failing on the duplicate.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns it, or the collector registered before under the
// same descriptors.
func Register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		if existing, ok := dup.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	var zero T
	return zero, fmt.Errorf("register metrics: %w", err)
}

// Into is Register for a collector held in *c: on a duplicate, *c becomes the one registered
// before.
func Into[T prometheus.Collector](reg prometheus.Registerer, c *T) error {
	r, err := Register(reg, *c)
	if err != nil {
		return err
	}
	*c = r
	return nil
}
