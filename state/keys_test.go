package state

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/samsa-go/samsa/codec"
)

// TestTableKeyLayout pins the Redis key layout the package doc describes: all keys of a
// partition carry the hash tag {ns:p}.
func TestTableKeyLayout(t *testing.T) {
	r := &redisTable[string, string]{ns: "purchases", key: codec.String(), val: codec.String()}
	keys, err := r.dataKeys(12, []string{"u1", "a}b{c", ""}, nil)
	assert.NoError(t, err)
	assert.Equal(t, []string{"{purchases:12}:k:u1", "{purchases:12}:k:a}b{c", "{purchases:12}:k:"}, keys)
	assert.Equal(t, "{purchases:12}:applied", r.appliedKey(12))
	assert.Equal(t, "{purchases:12}:fences", r.fencesKey(12))
	for _, k := range append(keys, r.appliedKey(12), r.fencesKey(12)) {
		assert.Equal(t, "purchases:12", hashTag(k), k)
	}
}

// hashTag is Redis Cluster's rule: the part between the first '{' and the next '}', if
// not empty; otherwise the whole key.
func hashTag(key string) string {
	for i := 0; i < len(key); i++ {
		if key[i] == '{' {
			for j := i + 1; j < len(key); j++ {
				if key[j] == '}' {
					if j > i+1 {
						return key[i+1 : j]
					}
					return key
				}
			}
			return key
		}
	}
	return key
}
