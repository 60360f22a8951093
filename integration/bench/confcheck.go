package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/integration/stack"
)

// confDump collects librdkafka's "Client configuration" dumps (debug=conf) per client
// kind ("consumer", "producer"): property -> value as librdkafka holds it.
type confDump struct {
	mu    sync.Mutex
	conf  map[string]map[string]string // kind -> key -> value
	where map[string]string            // client name -> current section
}

func newConfDump() *confDump {
	return &confDump{conf: map[string]map[string]string{}, where: map[string]string{}}
}

func (d *confDump) add(client, tag, msg string) {
	if tag != "CONF" {
		return
	}
	kind := "other"
	switch {
	case strings.Contains(client, "consumer"):
		kind = "consumer"
	case strings.Contains(client, "producer"):
		kind = "producer"
	}
	if _, after, ok := strings.Cut(msg, "]: "); ok {
		msg = after
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch strings.TrimSpace(msg) {
	case "Client configuration:":
		d.where[client] = "global"
		return
	case "Default topic configuration:":
		d.where[client] = "topic"
		return
	}
	k, v, ok := strings.Cut(strings.TrimSpace(msg), " = ")
	if !ok || d.where[client] == "" {
		return
	}
	if d.conf[kind] == nil {
		d.conf[kind] = map[string]string{}
	}
	d.conf[kind][d.where[client]+":"+k] = v
}

// wait waits up to 20 s for a consumer's and a producer's dump, then 300 ms for the rest.
func (d *confDump) wait() {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		d.mu.Lock()
		both := len(d.conf["consumer"]) > 0 && len(d.conf["producer"]) > 0
		d.mu.Unlock()
		if both {
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
}

// slogCapture feeds the framework's forwarded librdkafka logs into a confDump.
type slogCapture struct{ d *confDump }

func (h slogCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h slogCapture) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h slogCapture) WithGroup(string) slog.Handler            { return h }
func (h slogCapture) Handle(_ context.Context, r slog.Record) error {
	msg, ok := strings.CutPrefix(r.Message, "librdkafka: ")
	if !ok {
		return nil
	}
	var client, tag string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "client":
			client = a.Value.String()
		case "tag":
			tag = a.Value.String()
		}
		return true
	})
	h.d.add(client, tag, msg)
	return nil
}

func confDebug() map[string]any { return map[string]any{"debug": "conf", "log_level": 7} }

// ignoredConf reports the properties that differ by design between two clients of one run
// (default_topic_conf is a pointer).
func ignoredConf(k string) bool { return k == "global:group.id" || k == "global:default_topic_conf" }

// compareConfigs starts samsa's processor and the baseline's clients with debug=conf on a
// scratch topic, and returns the properties whose effective values differ.
func (e *env) compareConfigs(ctx context.Context) ([]string, error) {
	in, out := stack.UniqueName("bench-conf-in"), stack.UniqueName("bench-conf-out")
	for _, t := range []string{in, out} {
		if err := e.adm.createTopic(ctx, t, e.o.partitions); err != nil {
			return nil, err
		}
	}
	defer e.adm.deleteTopics(in, out)
	r := run{
		brokers: e.o.brokers, group: stack.UniqueName("bench-conf"), in: in, out: out,
		batch: e.o.batch, batchWait: e.o.batchWait, commitInterval: e.o.commitInterval,
		consumer: mergeAny(e.o.consumer, confDebug()), producer: mergeAny(e.o.producer, confDebug()),
		codec: e.o.samsaCodec, first: &firstMark{},
	}

	sd := newConfDump()
	p, err := samsaProcessor(r, slog.New(slogCapture{sd}))
	if err != nil {
		return nil, err
	}
	run := startRun(ctx, p.Run)
	sd.wait()
	if err := run.stop(); err != nil {
		return nil, fmt.Errorf("samsa: %w", err)
	}

	bd := newConfDump()
	c, err := kafka.NewConsumer(baselineConsumerConfig(r.brokers, r.group+"-b", r.commitInterval, r.consumer))
	if err != nil {
		return nil, err
	}
	pr, err := kafka.NewProducer(baselineProducerConfig(r.brokers, r.producer))
	if err != nil {
		c.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	for _, ch := range []chan kafka.LogEvent{c.Logs(), pr.Logs()} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range ch {
				bd.add(ev.Name, ev.Tag, ev.Message)
			}
		}()
	}
	bd.wait()
	c.Close()
	pr.Close()
	wg.Wait()

	if os.Getenv("BENCH_SHOW_CONF") != "" {
		for _, kind := range []string{"consumer", "producer"} {
			for _, k := range slices.Sorted(maps.Keys(sd.conf[kind])) {
				fmt.Printf("  %s %s = %s\n", kind, k, sd.conf[kind][k])
			}
		}
	}
	var diffs []string
	for _, kind := range []string{"consumer", "producer"} {
		s, b := sd.conf[kind], bd.conf[kind]
		if len(s) == 0 || len(b) == 0 {
			diffs = append(diffs, fmt.Sprintf("%s: no configuration dump captured (samsa %d, baseline %d properties)", kind, len(s), len(b)))
			continue
		}
		val := func(m map[string]string, k string) string {
			if v, ok := m[k]; ok {
				return v
			}
			return "(default)"
		}
		keys := slices.Concat(slices.Collect(maps.Keys(s)), slices.Collect(maps.Keys(b)))
		slices.Sort(keys)
		for _, k := range slices.Compact(keys) {
			if sv, bv := val(s, k), val(b, k); sv != bv && !ignoredConf(k) {
				diffs = append(diffs, fmt.Sprintf("%s %s: samsa %q, baseline %q", kind, k, sv, bv))
			}
		}
	}
	return diffs, nil
}
