// Package embedded runs an in-process Kafka-protocol broker (franz-go's kfake) for the
// zero-setup quickstart and fast tests. It is a fake: it speaks the protocol well enough
// for confluent-kafka-go v2.15 to produce, consume, commit, run transactions and rebalance
// cooperatively, but it is not Apache Kafka, so every feature is also tested on a real
// broker (integration/stack).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Topic is a topic to create when the broker starts.
type Topic struct {
	Name       string
	Partitions int32
}

// Broker is a running in-process broker. Close it when done.
type Broker struct {
	c *kfake.Cluster
}

// Start starts a one-node in-process broker listening on a free 127.0.0.1 port, with the
// given topics created. Group session timeouts down to 100 ms are allowed so tests can
// exercise crashes quickly.
func Start(topics ...Topic) (*Broker, error) {
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}
	for _, t := range topics {
		if t.Name == "" || t.Partitions < 1 {
			return nil, fmt.Errorf("embedded: topic %q with %d partitions: want a name and at least 1 partition", t.Name, t.Partitions)
		}
		opts = append(opts, kfake.SeedTopics(t.Partitions, t.Name))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded: start broker: %w", err)
	}
	return &Broker{c: c}, nil
}

// Bootstrap is the broker's address for bootstrap.servers.
func (b *Broker) Bootstrap() string { return strings.Join(b.c.ListenAddrs(), ",") }

// Cluster is the fake itself, for the test kit's fault controls.
func (b *Broker) Cluster() *kfake.Cluster { return b.c }

// Close stops the broker; everything it stored is gone.
func (b *Broker) Close() { b.c.Close() }

// BrokersFromEnv returns $KAFKA_BROKERS when set (and a no-op stop), else starts an
// in-process broker with the given topics and returns its address and its Close. This is
// the examples' "zero setup" rule: nothing configured means the embedded broker. With a
// real cluster the caller creates its topics itself.
func BrokersFromEnv(ctx context.Context, topics ...Topic) (bootstrap string, embedded bool, stop func(), err error) {
	if v := os.Getenv("KAFKA_BROKERS"); v != "" {
		return v, false, func() {}, nil
	}
	if err := ctx.Err(); err != nil {
		return "", false, nil, err
	}
	b, err := Start(topics...)
	if err != nil {
		return "", false, nil, errors.Join(err, errors.New("embedded: set KAFKA_BROKERS to use a running cluster instead"))
	}
	return b.Bootstrap(), true, b.Close, nil
}
