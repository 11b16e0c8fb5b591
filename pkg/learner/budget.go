package learner

import "time"

// budgetEnds says whether a step that brought the run's time to elapsed, itself taking took,
// is the last that fits the time budget (config.TimeBudget): one more as long would end past
// it.
func budgetEnds(budget, elapsed, took time.Duration) bool {
	return budget > 0 && elapsed+took > budget
}
