package metrics_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/internal/embedded"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/metrics"
	"github.com/samsa-go/samsa/processor"
)

// TestPrometheusScrape runs a processor with the Prometheus provider and scrapes
// /metrics during the run: the instruments are there with sensible values, and the lag
// reaches 0 once everything is processed.
func TestPrometheusScrape(t *testing.T) {
	brokers, in, out := brokersAndTopics(t)
	const n = 1000
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "log_level": 3})
	require.NoError(t, err)
	topic := in
	dr := make(chan kafka.Event, n)
	for i := range n {
		v := binary.BigEndian.AppendUint64(nil, uint64(i))
		require.NoError(t, p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: int32(i % 2)}, Key: v, Value: v}, dr))
	}
	for range n {
		require.NoError(t, (<-dr).(*kafka.Message).TopicPartition.Error)
	}
	p.Close()

	prom, err := metrics.NewPrometheus("scrape-test")
	require.NoError(t, err)
	defer prom.Shutdown(context.Background())
	srv := httptest.NewServer(prom.Handler())
	defer srv.Close()

	output := processor.NewOutput(out, codec.Int64(), codec.Int64())
	proc, err := processor.New(processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, Group: "scraped-" + in, BatchSize: 100, BatchWait: 5 * time.Millisecond},
		[]processor.Input[int64, int64]{{Topic: in, Key: codec.Int64(), Value: codec.Int64()}},
		processor.HandlerFunc[int64, int64](func(ctx context.Context, b *processor.Batch[int64, int64]) error {
			for _, r := range b.Records {
				if err := output.Send(b, r.Key, r.Value); err != nil {
					return err
				}
			}
			return nil
		}), processor.WithMeterProvider(prom.Provider))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- proc.Run(ctx) }()

	scrape := func() string {
		resp, err := srv.Client().Get(srv.URL)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(body)
	}
	var text string
	testwait.ForNoError(t, 30*time.Second, "every record produced and no lag", func() error {
		text = scrape()
		if metricSum(text, "samsa_records_produced_total") == n && metricSum(text, "samsa_consumer_lag") == 0 &&
			regexp.MustCompile(`samsa_consumer_lag\{`).MatchString(text) {
			return nil
		}
		return fmt.Errorf("last scrape:\n%s", text)
	})
	assert.EqualValues(t, n, metricSum(text, "samsa_records_consumed_total"))
	assert.Greater(t, metricSum(text, "samsa_batch_size_count"), 0.0, "%s", text)
	assert.Greater(t, metricSum(text, "samsa_batch_commit_latency_seconds_count"), 0.0)
	assert.Greater(t, metricSum(text, "samsa_rebalances_total"), 0.0)
	assert.Contains(t, text, `messaging_consumer_group_name="scraped-`+in+`"`)
	assert.Contains(t, text, `messaging_destination_partition_id="1"`)
	cancel()
	require.NoError(t, <-errc)
}

// brokersAndTopics gives the test a real Kafka when KAFKA_BROKERS is set (make test sets
// it), else the embedded broker, with two fresh 2-partition topics.
func brokersAndTopics(t *testing.T) (brokers, in, out string) {
	t.Helper()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	in, out = "scrape-in-"+suffix, "scrape-out-"+suffix
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": env, "log_level": 3})
		require.NoError(t, err)
		defer ac.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := ac.CreateTopics(ctx, []kafka.TopicSpecification{{Topic: in, NumPartitions: 2, ReplicationFactor: -1}, {Topic: out, NumPartitions: 2, ReplicationFactor: -1}})
		require.NoError(t, err)
		for _, r := range res {
			require.Equal(t, kafka.ErrNoError, r.Error.Code(), "create %s: %v", r.Topic, r.Error)
		}
		testwait.ForNoError(t, 30*time.Second, "both topics in the metadata", func() error {
			for _, topic := range []string{in, out} {
				md, err := ac.GetMetadata(&topic, false, 5000)
				if err != nil {
					return err
				}
				if tm := md.Topics[topic]; tm.Error.Code() != kafka.ErrNoError || len(tm.Partitions) != 2 {
					return fmt.Errorf("topic %s: %v, %d partitions", topic, tm.Error, len(tm.Partitions))
				}
			}
			return nil
		})
		return env, in, out
	}
	b, err := embedded.Start(embedded.Topic{Name: in, Partitions: 2}, embedded.Topic{Name: out, Partitions: 2})
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b.Bootstrap(), in, out
}

// metricSum adds the values of every sample of a metric family in Prometheus text.
func metricSum(text, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? ([0-9.eE+-]+)$`)
	var sum float64
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	return sum
}

// TestPrometheusRuntimeCollectors checks that /metrics serves the Go runtime and process
// collectors next to samsa's instruments: goroutines, heap and resident memory.
func TestPrometheusRuntimeCollectors(t *testing.T) {
	prom, err := metrics.NewPrometheus("runtime-test")
	require.NoError(t, err)
	defer prom.Shutdown(context.Background())
	srv := httptest.NewServer(prom.Handler())
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text := string(body)
	assert.GreaterOrEqual(t, metricSum(text, "go_goroutines"), 1.0, "%s", text)
	assert.Greater(t, metricSum(text, "go_memstats_heap_alloc_bytes"), 0.0)
	if runtime.GOOS == "linux" { // the process collector reads /proc
		assert.Greater(t, metricSum(text, "process_resident_memory_bytes"), 0.0, "%s", text)
		assert.Greater(t, metricSum(text, "process_open_fds"), 0.0)
	}

	// Two providers in one process keep separate registries: no duplicate registration.
	other, err := metrics.NewPrometheus("runtime-test-2")
	require.NoError(t, err)
	require.NoError(t, other.Shutdown(context.Background()))
}
