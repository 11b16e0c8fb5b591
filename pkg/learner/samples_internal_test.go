package learner

import "testing"

func TestKeepSamples(t *testing.T) {
	for _, tc := range []struct {
		every int
		steps int64
		want  []int64
	}{
		{10, 25, []int64{0, 10, 20, 24}},
		{10, 21, []int64{0, 10, 20}},
		{1, 3, []int64{0, 1, 2}},
		{0, 5, []int64{4}},
	} {
		var got []int64
		for s := range tc.steps {
			if keepSamples(s, s+1 == tc.steps, tc.every) {
				got = append(got, s)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("samples_every %d over %d steps keeps %v, want %v", tc.every, tc.steps, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("samples_every %d over %d steps keeps %v, want %v", tc.every, tc.steps, got, tc.want)
				break
			}
		}
	}
}
