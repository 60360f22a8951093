package processor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/samsa-go/samsa/internal/record"
)

func TestMergeByTimestampKeepsTopicOrder(t *testing.T) {
	at := func(topic string, off int64, ms int64) record.Message {
		return record.Message{Topic: topic, Offset: off, Timestamp: time.UnixMilli(ms)}
	}
	in := []record.Message{
		at("tweets", 0, 5), at("tweets", 1, 1), // out of timestamp order within the topic
		at("follows", 0, 2), at("follows", 1, 3), at("tweets", 2, 9), at("follows", 2, 10),
	}
	got := mergeByTimestamp(append([]record.Message(nil), in...))
	var order []string
	for _, m := range got {
		order = append(order, m.Topic[:1]+string(rune('0'+m.Offset)))
	}
	// follows 0 (ts 2) and 1 (ts 3) come before tweets 0 (ts 5); tweets 1 (ts 1) must
	// still follow tweets 0: a topic's own order is never changed.
	assert.Equal(t, []string{"f0", "f1", "t0", "t1", "t2", "f2"}, order)
	assert.Len(t, mergeByTimestamp(in[:2]), 2, "one topic: unchanged")
}
