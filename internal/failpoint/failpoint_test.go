package failpoint

import "testing"

func TestHitIsHarmlessWithoutChaos(t *testing.T) {
	if Enabled {
		t.Skip("built with -tags chaos: Hit may kill this test process")
	}
	t.Setenv("SAMSA_FAILPOINT", "x")
	Hit("x") // must return
}
