// Package admin holds the few cluster operations the framework needs at start: partition
// counts of its topics (co-partitioning checks) and creating a topic that must exist.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/samsa-go/samsa/internal/kconf"
)

// Client is a short-lived admin connection.
type Client struct {
	ac      *kafka.AdminClient
	brokers string
	conn    kconf.Map     // the connection properties (TLS, SASL), for helper clients
	logs    chan struct{} // closed when log forwarding ended
	// authFailed holds librdkafka's message when a broker refused the client's
	// credentials or TLS handshake: metadata calls then fail at once instead of timing out.
	authFailed atomic.Pointer[string]
}

// ErrUnreachable is wrapped by PartitionCounts when no broker answered in time.
var ErrUnreachable = errors.New("brokers unreachable")

// ErrAuthentication is wrapped by PartitionCounts when a broker refused the client's SASL
// credentials or its TLS handshake failed.
var ErrAuthentication = errors.New("authentication failed")

// ErrUnknownTopic is wrapped by PartitionCounts for a topic the cluster does not have.
var ErrUnknownTopic = errors.New("topic does not exist")

// Dial connects an admin client with the user's connection overrides (TLS, SASL); its
// librdkafka log lines go to log (nil: discarded).
func Dial(brokers string, overrides kconf.Map, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cm := kconf.Build(kconf.Map{"log_level": 3}, overrides, kconf.Map{"bootstrap.servers": brokers, "go.logs.channel.enable": true})
	// Consumer-only and producer-only properties would make the admin client fail; keep
	// only what concerns the connection.
	for k := range *cm {
		if !connectionKey(k) {
			delete(*cm, k)
		}
	}
	ac, err := kafka.NewAdminClient(cm)
	if err != nil {
		return nil, fmt.Errorf("admin: connect: %w", err)
	}
	conn := kconf.Map{}
	for k, v := range *cm {
		if k != "go.logs.channel.enable" {
			conn[k] = v
		}
	}
	c := &Client{ac: ac, brokers: brokers, conn: conn, logs: make(chan struct{})}
	tee := make(chan kafka.LogEvent, 16)
	go func() {
		defer close(tee)
		for ev := range ac.Logs() {
			if ev.Tag == "FAIL" && authFailure(ev.Message) {
				msg := ev.Message
				c.authFailed.CompareAndSwap(nil, &msg)
			}
			tee <- ev
		}
	}()
	go func() {
		defer close(c.logs)
		kconf.ForwardLogs(log, tee)
	}()
	return c, nil
}

// authFailure tells librdkafka's connection failures that retrying cannot fix: the
// broker refused the SASL credentials, or the TLS handshake failed.
func authFailure(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "authentication error") || strings.Contains(m, "authentication failed") ||
		strings.Contains(m, "ssl handshake failed")
}

func connectionKey(k string) bool {
	switch k {
	case "bootstrap.servers", "log_level", "go.logs.channel.enable", "client.id", "client.rack", "socket.timeout.ms",
		"security.protocol", "sasl.mechanisms", "sasl.mechanism", "sasl.username", "sasl.password",
		"broker.address.family", "metadata.max.age.ms", "debug":
		return true
	}
	return len(k) > 4 && (k[:4] == "ssl." || k[:5] == "sasl.")
}

// unreachable explains a metadata request that no broker answered: it names every
// bootstrap address with what a plain TCP connection to it says (refused, no route,
// timed out), or that TCP connects and the client's security settings are the suspect.
func (c *Client) unreachable(waited time.Duration, cause error) error {
	var probes []string
	for _, addr := range strings.Split(c.brokers, ",") {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			probes = append(probes, err.Error())
			continue
		}
		conn.Close()
		probes = append(probes, addr+": TCP connects, but no Kafka answer (check security.protocol, TLS and SASL settings, and that this is a Kafka listener)")
	}
	// The wait is the time left on the caller's deadline when the request went out, a
	// few milliseconds under the timeout the caller configured: tenths of a second say it
	// (2s, not 1.998s).
	return fmt.Errorf("admin: %w: no answer from %s within %s (%s): %w", ErrUnreachable, c.brokers, waited.Round(100*time.Millisecond), strings.Join(probes, "; "), cause)
}

// Close releases the client.
func (c *Client) Close() {
	c.ac.Close()
	<-c.logs
}

// PartitionCounts returns the partition count of every topic, failing with every missing
// topic named (wrapping ErrUnknownTopic).
func (c *Client) PartitionCounts(ctx context.Context, topics []string) (map[string]int, error) {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	counts := make(map[string]int, len(topics))
	var errs []error
	for _, t := range topics {
		md, err := c.metadata(t, timeout)
		if err != nil {
			if errors.Is(err, ErrAuthentication) {
				return nil, err
			}
			var kerr kafka.Error
			if errors.As(err, &kerr) {
				switch kerr.Code() {
				case kafka.ErrTimedOut, kafka.ErrTransport, kafka.ErrAllBrokersDown:
					return nil, c.unreachable(timeout, err)
				}
			}
			return nil, fmt.Errorf("admin: metadata of %q: %w", t, err)
		}
		tm, ok := md.Topics[t]
		if !ok || tm.Error.Code() == kafka.ErrUnknownTopicOrPart || tm.Error.Code() == kafka.ErrUnknownTopic || len(tm.Partitions) == 0 {
			errs = append(errs, fmt.Errorf("admin: %w: %q", ErrUnknownTopic, t))
			continue
		}
		if tm.Error.Code() != kafka.ErrNoError {
			errs = append(errs, fmt.Errorf("admin: metadata of %q: %w", t, tm.Error))
			continue
		}
		counts[t] = len(tm.Partitions)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return counts, nil
}

// metadata asks for topic's metadata for up to timeout, in slices of at most a second, so
// that an authentication failure logged meanwhile ends the wait at once.
func (c *Client) metadata(topic string, timeout time.Duration) (*kafka.Metadata, error) {
	deadline := time.Now().Add(timeout)
	for {
		if msg := c.authFailed.Load(); msg != nil {
			return nil, fmt.Errorf("admin: %w at %s: %s (check sasl.username, sasl.password, sasl.mechanisms and the ssl.* settings)", ErrAuthentication, c.brokers, *msg)
		}
		slice := min(time.Until(deadline), time.Second)
		md, err := c.ac.GetMetadata(&topic, false, int(max(slice, time.Millisecond).Milliseconds()))
		var kerr kafka.Error
		if err == nil || time.Until(deadline) <= 0 || !errors.As(err, &kerr) || (kerr.Code() != kafka.ErrTimedOut && kerr.Code() != kafka.ErrTransport) {
			return md, err
		}
	}
}

// EnsureTopic creates topic with partitions and replication factor rf (-1: the broker's
// default) unless it exists, and returns its partition count.
func (c *Client) EnsureTopic(ctx context.Context, topic string, partitions, rf int) (int, error) {
	counts, err := c.PartitionCounts(ctx, []string{topic})
	if err == nil {
		return counts[topic], nil
	}
	if !errors.Is(err, ErrUnknownTopic) {
		return 0, err
	}
	res, err := c.ac.CreateTopics(ctx, []kafka.TopicSpecification{{Topic: topic, NumPartitions: partitions, ReplicationFactor: rf}})
	if err != nil {
		return 0, fmt.Errorf("admin: create topic %q: %w", topic, err)
	}
	if code := res[0].Error.Code(); code != kafka.ErrNoError && code != kafka.ErrTopicAlreadyExists {
		return 0, fmt.Errorf("admin: create topic %q: %w", topic, res[0].Error)
	}
	// Metadata lags creation by a moment.
	for {
		counts, err := c.PartitionCounts(ctx, []string{topic})
		if err == nil {
			return counts[topic], nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("admin: topic %q created but not visible: %w", topic, errors.Join(err, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CheckCoPartitioned returns an error naming every topic and its count when counts differ.
func CheckCoPartitioned(counts map[string]int, order []string) error {
	if len(slices.Compact(slices.Sorted(maps.Values(counts)))) <= 1 {
		return nil
	}
	msg := ""
	for i, t := range order {
		if i > 0 {
			msg += ", "
		}
		msg += fmt.Sprintf("%q (%d partitions)", t, counts[t])
	}
	return fmt.Errorf("input topics %s are not co-partitioned: partition p of every input goes to one handler, so they need the same partition count", msg)
}
