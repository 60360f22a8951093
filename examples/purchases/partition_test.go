package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// The vectors of Kafka's own UtilsTest.testMurmur2.
func TestMurmur2(t *testing.T) {
	tests := []struct {
		key  string
		want int32
	}{
		{"21", -973932308},
		{"foobar", -790332482},
		{"a-little-bit-long-string", -985981536},
		{"a-little-bit-longer-string", -1486304829},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
		{"abc", 479470107},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, murmur2([]byte(tt.key)), tt.key)
	}
}

func TestPartitionOf(t *testing.T) {
	for _, key := range []string{"", "u1", "user-42", "\xff\xfe\xfd"} {
		for _, n := range []int{1, 3, 8, 12} {
			p := partitionOf([]byte(key), n)
			assert.True(t, p >= 0 && int(p) < n, "%q over %d partitions: %d", key, n, p)
		}
	}
	// Positive even when the hash is negative.
	assert.Equal(t, int32(int((-973932308)&0x7fffffff)%8), partitionOf([]byte("21"), 8))
}
