package startup

import "testing"

func TestSplitRunTarget(t *testing.T) {
	for _, tc := range []struct{ in, store, run string }{
		{"runs/r7", "runs", "r7"},
		{"/data/runs/r7/", "/data/runs", "r7"},
		{"s3://ckpts/team/r7", "s3://ckpts/team", "r7"},
		{"s3://ckpts/r7?endpoint=127.0.0.1:7070&secure=false", "s3://ckpts?endpoint=127.0.0.1:7070&secure=false", "r7"},
	} {
		store, run, err := SplitRunTarget(tc.in)
		if err != nil || store != tc.store || run != tc.run {
			t.Errorf("SplitRunTarget(%q) = %q, %q, %v; want %q, %q", tc.in, store, run, err, tc.store, tc.run)
		}
	}
	if _, _, err := SplitRunTarget("/"); err == nil {
		t.Error("a target without a run id was accepted")
	}
}
