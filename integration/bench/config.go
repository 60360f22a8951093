package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// kvFlag is a k=v,k=v list of librdkafka properties.
type kvFlag map[string]any

func (f *kvFlag) String() string {
	if f == nil || len(*f) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(*f)) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, (*f)[k]))
	}
	return strings.Join(parts, ",")
}

func (f *kvFlag) Set(s string) error {
	if *f == nil {
		*f = kvFlag{}
	}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q: want key=value", kv)
		}
		(*f)[strings.TrimSpace(k)] = parseValue(strings.TrimSpace(v))
	}
	return nil
}

// parseValue keeps integers and booleans typed, as the framework's own maps are.
func parseValue(v string) any {
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	if b, err := strconv.ParseBool(v); err == nil && (v == "true" || v == "false") {
		return b
	}
	return v
}

// variant is a set of consumer properties applied to both contestants on top of the
// framework's defaults (and of -consumer), or samsa's MaxBufferedBytes.
type variant struct {
	name     string
	consumer map[string]any
	buffer   int64 // samsa's MaxBufferedBytes (0: -samsa-buffer)
}

func (v variant) describe() string {
	if len(v.consumer) == 0 {
		f := kvFlag(frameworkConsumerTuning())
		return "framework defaults: " + f.String()
	}
	f := kvFlag(v.consumer)
	return f.String()
}

// tuningVariants returns the tuning comparison's consumer settings: librdkafka (its own
// defaults, restored over the framework's), framework (processor/config.go's, mirrored in
// frameworkConsumerTuning), deep (deep prefetch, short fetch wait), deep-wait10 (deep
// prefetch, the framework's fetch wait), wait5 (the framework's depth, short wait), q300k
// (intermediate depth) and deep-4mb (deep prefetch, 4 MiB per-partition fetch).
func tuningVariants() map[string]map[string]any {
	return map[string]map[string]any{
		"librdkafka":  {"queued.min.messages": 100000, "fetch.min.bytes": 1, "fetch.wait.max.ms": 500, "queued.max.messages.kbytes": 65536, "fetch.queue.backoff.ms": 1000},
		"framework":   nil,
		"deep":        {"queued.min.messages": 1000000, "fetch.min.bytes": 1, "fetch.wait.max.ms": 5},
		"deep-wait10": {"queued.min.messages": 1000000, "fetch.min.bytes": 1, "fetch.wait.max.ms": 10},
		"wait5":       {"queued.min.messages": 100000, "fetch.min.bytes": 1, "fetch.wait.max.ms": 5},
		"q300k":       {"queued.min.messages": 300000, "fetch.min.bytes": 1, "fetch.wait.max.ms": 5},
		"deep-4mb":    {"queued.min.messages": 1000000, "fetch.min.bytes": 1, "fetch.wait.max.ms": 5, "max.partition.fetch.bytes": 4 << 20},
	}
}

// The framework's client configuration, mirrored for the baseline. The config check
// (-check-config) compares librdkafka's dump of both sides and reports any drift.
//
//	processor/config.go   consumerDefaults, producerDefaults
//	internal/group        Engine.consumerConfig (owned keys and defaults)
//	internal/produce      New (owned keys and defaults)
func frameworkConsumerTuning() map[string]any {
	return map[string]any{
		"fetch.wait.max.ms":          10,
		"fetch.min.bytes":            1,
		"queued.min.messages":        100000,
		"queued.max.messages.kbytes": 2048, // half of the default MaxBufferedBytes
		"fetch.queue.backoff.ms":     10,
	}
}

// The strongest loop's own settings (the "loop" contestant), on top of the mirror of the
// framework's: a fetch waits for 64 KiB or 50 ms, so a busy partition is fetched in few
// large responses, and the producer builds batches of up to 1 MiB.
func loopConsumerTuning() map[string]any {
	return map[string]any{
		"fetch.min.bytes":            65536,
		"fetch.wait.max.ms":          50,
		"queued.min.messages":        100000,
		"queued.max.messages.kbytes": 32768,
		"fetch.queue.backoff.ms":     10,
	}
}

func loopProducerTuning() map[string]any {
	return map[string]any{"linger.ms": 5, "batch.size": 1 << 20}
}

func baselineConsumerConfig(brokers, group string, commitInterval time.Duration, overrides ...map[string]any) *kafka.ConfigMap {
	cm := kafka.ConfigMap{
		// internal/group defaults
		"auto.offset.reset": "earliest",
		"isolation.level":   "read_uncommitted",
		"log_level":         6,
	}
	setAll(cm, frameworkConsumerTuning())
	for _, o := range overrides {
		setAll(cm, o)
	}
	// internal/group owned keys (Cooperative protocol, processor defaults for the timeouts)
	maps.Copy(cm, kafka.ConfigMap{
		"bootstrap.servers":             brokers,
		"group.id":                      group,
		"enable.auto.commit":            true,
		"enable.auto.offset.store":      false,
		"auto.commit.interval.ms":       int(commitInterval.Milliseconds()),
		"max.poll.interval.ms":          int((5 * time.Minute).Milliseconds()),
		"go.logs.channel.enable":        true,
		"group.protocol":                "classic",
		"session.timeout.ms":            45000,
		"heartbeat.interval.ms":         3000,
		"partition.assignment.strategy": "cooperative-sticky",
	})
	return &cm
}

func baselineProducerConfig(brokers string, overrides ...map[string]any) *kafka.ConfigMap {
	cm := kafka.ConfigMap{
		// internal/produce defaults, then processor producerDefaults
		"linger.ms":               5,
		"log_level":               6,
		"partitioner":             "murmur2_random",
		"go.events.channel.size":  10000,
		"go.produce.channel.size": 1,
	}
	for _, o := range overrides {
		setAll(cm, o)
	}
	maps.Copy(cm, kafka.ConfigMap{
		"bootstrap.servers":                     brokers,
		"enable.idempotence":                    true,
		"acks":                                  "all",
		"max.in.flight.requests.per.connection": 5,
		"go.delivery.reports":                   true,
		"go.delivery.report.fields":             "none",
		"go.logs.channel.enable":                true,
	})
	return &cm
}

func mergeAny(ms ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func setAll(cm kafka.ConfigMap, m map[string]any) {
	for k, v := range m {
		cm[k] = v
	}
}
