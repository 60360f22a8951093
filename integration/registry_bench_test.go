package integration

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
)

// BenchmarkAvroVsJSONThroughProcessor measures, in one run, what a record costs when a
// processor decodes its value and encodes its output with the registry's Avro codec,
// and with codec.JSON: b.N records through a processor on real Kafka for each, end to
// end (from the first batch handled, so the group join is excluded, until the group has
// committed them all), and the codecs alone (decode + encode of the same records, no
// Kafka; the fastest of three passes). Metrics: avro-ns/rec, json-ns/rec, avro/json (end
// to end), and the same with a codec- prefix.
//
//	go test -run '^$' -bench AvroVsJSON -benchtime 50000x ./integration/
func BenchmarkAvroVsJSONThroughProcessor(b *testing.B) {
	if testing.Short() {
		b.Skip("short mode: needs a real Kafka and a real schema registry")
	}
	brokers := stack.KafkaBrokers(b)
	client, err := registry.NewClient(registry.Config{URL: stack.SchemaRegistryURL(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	in := stack.UniqueName("bench-in")
	avroIn, err := registry.Avro[order](client, in, registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	avroOut, err := registry.Avro[order](client, in+"-out", registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	jsonCodec := codec.JSON[order]()

	n := b.N
	values := make([]order, n)
	for i := range values {
		values[i] = order{ID: fmt.Sprintf("order-%08d", i), Amount: int64(i) * 37, Seq: int64(i)}
	}
	type format struct {
		name string
		in   codec.Codec[order]
		out  codec.Codec[order]
	}
	formats := []format{{"avro", avroIn, avroOut}, {"json", jsonCodec, jsonCodec}}
	perRecord := map[string]float64{}
	codecOnly := map[string]float64{}
	b.ResetTimer()
	b.StopTimer()
	for _, f := range formats {
		topic, out := stack.UniqueName("bench-"+f.name), stack.UniqueName("bench-"+f.name+"-out")
		harness.CreateTopic(b, brokers, topic, 4, 1)
		harness.CreateTopic(b, brokers, out, 4, 1)
		encoded := make([][]byte, n)
		for i, v := range values {
			if encoded[i], err = f.in.Encode(v); err != nil {
				b.Fatal(err)
			}
		}
		// The codecs alone: the fastest of three passes, since the machine is shared.
		for range 3 {
			start := time.Now()
			for _, data := range encoded {
				v, err := f.in.Decode(data)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := f.out.Encode(v); err != nil {
					b.Fatal(err)
				}
			}
			ns := float64(time.Since(start).Nanoseconds()) / float64(n)
			if c, ok := codecOnly[f.name]; !ok || ns < c {
				codecOnly[f.name] = ns
			}
		}

		msgs := make([]*kafka.Message, n)
		for i := range msgs {
			msgs[i] = &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % 4)}, Key: []byte(key(i)), Value: encoded[i]}
		}
		harness.ProduceMessages(b, brokers, msgs)
		output := processor.NewOutput(out, codec.String(), codec.Encoder[order](f.out))
		group := stack.UniqueName("bench")
		var first atomic.Int64 // when the first batch was handled, Unix ns
		p, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: group, BatchSize: 500},
			[]processor.Input[string, order]{{Topic: topic, Key: codec.String(), Value: f.in}},
			processor.HandlerFunc[string, order](func(_ context.Context, bt *processor.Batch[string, order]) error {
				first.CompareAndSwap(0, time.Now().UnixNano())
				for _, r := range bt.Records {
					if err := output.Send(bt, r.Key, r.Value); err != nil {
						return err
					}
				}
				return nil
			}))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		benchRun(b, p, brokers, group, topic, n)
		// From the first batch handled (the group join excluded) to the last commit seen.
		perRecord[f.name] = float64(time.Now().UnixNano()-first.Load()) / float64(n)
		b.StopTimer()
	}
	b.ReportMetric(perRecord["avro"], "avro-ns/rec")
	b.ReportMetric(perRecord["json"], "json-ns/rec")
	b.ReportMetric(perRecord["avro"]/perRecord["json"], "avro/json")
	b.ReportMetric(codecOnly["avro"], "codec-avro-ns/rec")
	b.ReportMetric(codecOnly["json"], "codec-json-ns/rec")
	b.ReportMetric(codecOnly["avro"]/codecOnly["json"], "codec-avro/json")
}

// benchRun runs p until group has committed n records of topic's 4 partitions.
func benchRun(b *testing.B, p *processor.Processor[string, order], brokers, group, topic string, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		c, err := harness.FetchCommitted(brokers, group, topic, 4)
		total := int64(0)
		for _, off := range c {
			total += max(off, 0)
		}
		if err == nil && total == int64(n) {
			break
		}
		select {
		case err := <-errc:
			b.Fatalf("Run returned early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("group %s committed %d of %d records within 5m", group, total, n)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}
