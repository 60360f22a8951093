package processor

import "testing"

func TestConsumerDefaultsForBudget(t *testing.T) {
	for _, tc := range []struct {
		budget int64
		want   int
	}{
		{4 << 20, 2048},
		{1 << 20, 1024},    // at least 1 MiB
		{64 << 20, 32768},  // half
		{1 << 40, 2097151}, // librdkafka's largest
	} {
		if got := consumerDefaultsFor(tc.budget)["queued.max.messages.kbytes"]; got != tc.want {
			t.Errorf("budget %d: queued.max.messages.kbytes %v, want %d", tc.budget, got, tc.want)
		}
	}
}
