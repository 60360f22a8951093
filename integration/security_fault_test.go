package integration

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
)

// TestFaultSecuritySASL runs the processor against a broker that requires SASL/SCRAM
// (SCRAM-SHA-256 over SASL_PLAINTEXT) and authorizes with ACLs (StandardAuthorizer, no
// ACL means denied), started by stack.KafkaOptions.SASL:
//
//   - correct credentials and ACLs (read the input, write the output, read the group):
//     every record is processed and committed;
//   - a wrong password: Run fails, fast, with an error that says authentication failed;
//   - no WRITE on the output topic: Run fails with an error naming the topic, and
//     nothing is committed;
//   - no READ on the input (DESCRIBE only): Run fails, fast, with an error naming the
//     topic, and nothing is committed;
//   - no READ on the group: Run fails with an error naming the group, and nothing is
//     committed.
//
// Each case logs its time to fail ("security:").
func TestFaultSecuritySASL(t *testing.T) {
	harness.RequireFaultSuite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	k, err := stack.StartKafka(ctx, stack.KafkaOptions{SASL: true, HeapMB: 256})
	require.NoError(t, err, "start the SASL broker")
	t.Cleanup(func() { k.Close() })
	admin := k.Bootstrap() // the unauthenticated super-user listener
	const user, password = "app", "app-secret"
	require.NoError(t, k.AddSCRAMUser(ctx, user, password))
	ac := harness.NewAdmin(t, admin)

	const partitions, n = 4, 2000
	in := stack.UniqueName("sec-in")
	harness.CreateTopic(t, admin, in, partitions, 1)
	sp := harness.StartSeqProducer(t, admin, in, partitions, 100, n, 0)
	<-sp.Done
	require.NoError(t, sp.Err)
	ends := harness.EndOffsets(t, admin, in, partitions)

	allow := func(rt kafka.ResourceType, name string, ops ...kafka.ACLOperation) {
		allowACL(t, ac, "User:"+user, rt, name, kafka.ResourcePatternTypeLiteral, ops...)
	}
	allow(kafka.ResourceTopic, in, kafka.ACLOperationRead, kafka.ACLOperationDescribe)

	run := func(t *testing.T, pass, in, out, group string, timeout time.Duration) (error, time.Duration) {
		log, _ := harness.NewFileLog(t, "processor", slog.LevelInfo)
		cfg := processor.Config{Membership: processor.Membership{Brokers: k.SASLBootstrap(), SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second, Overrides: map[string]any{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-256",
			"sasl.username": user, "sasl.password": pass}}, Group: group}
		output := processor.NewOutput(out, codec.String(), codec.String())
		p, err := processor.New(cfg, []processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
			identityHandler(output, "sec"), processor.WithLogger(log))
		require.NoError(t, err)
		return runToCommitted(t, admin, p.Run, group, in, ends, timeout)
	}

	t.Run("credentials and ACLs", func(t *testing.T) {
		out, group := stack.UniqueName("sec-out"), stack.UniqueName("sec-ok")
		harness.CreateTopic(t, admin, out, partitions, 1)
		allow(kafka.ResourceTopic, out, kafka.ACLOperationWrite, kafka.ACLOperationDescribe)
		allow(kafka.ResourceGroup, group, kafka.ACLOperationRead)
		err, took := run(t, password, in, out, group, 2*time.Minute)
		require.NoError(t, err)
		assert.Equal(t, ends, harness.CommittedOffsets(t, admin, group, in, partitions))
		s := harness.TallySeq(harness.ReadTopic(t, admin, in, partitions, time.Minute), harness.ReadTopic(t, admin, out, partitions, time.Minute))
		assert.Zero(t, s.Lost)
		t.Logf("security: ok: %d records processed and committed in %s over SASL/SCRAM with ACLs", n, took.Round(time.Millisecond))
	})

	t.Run("wrong password", func(t *testing.T) {
		out, group := stack.UniqueName("sec-out"), stack.UniqueName("sec-badpw")
		harness.CreateTopic(t, admin, out, partitions, 1)
		allow(kafka.ResourceTopic, out, kafka.ACLOperationWrite, kafka.ACLOperationDescribe)
		allow(kafka.ResourceGroup, group, kafka.ACLOperationRead)
		err, took := run(t, "not-the-password", in, out, group, 2*time.Minute)
		t.Logf("security: wrong password: Run returned after %s: %v", took.Round(time.Millisecond), err)
		require.Error(t, err)
		assert.Contains(t, strings.ToLower(err.Error()), "authentication")
		assert.Less(t, took, 45*time.Second, "a wrong password fails fast")
		harness.NothingCommitted(t, admin, group, in, partitions)
	})

	t.Run("no write on the output", func(t *testing.T) {
		out, group := stack.UniqueName("sec-out"), stack.UniqueName("sec-nowrite")
		harness.CreateTopic(t, admin, out, partitions, 1)
		allow(kafka.ResourceTopic, out, kafka.ACLOperationDescribe)
		allow(kafka.ResourceGroup, group, kafka.ACLOperationRead)
		err, took := run(t, password, in, out, group, 2*time.Minute)
		t.Logf("security: no WRITE on %s: Run returned after %s: %v", out, took.Round(time.Millisecond), err)
		require.Error(t, err)
		assert.Contains(t, err.Error(), out, "the error names the output topic")
		harness.NothingCommitted(t, admin, group, in, partitions)
	})

	t.Run("no read on the input", func(t *testing.T) {
		// DESCRIBE only: the topic is visible, its records are not.
		hidden, out, group := stack.UniqueName("sec-noread"), stack.UniqueName("sec-out"), stack.UniqueName("sec-noread")
		harness.CreateTopic(t, admin, hidden, partitions, 1)
		hp := harness.StartSeqProducer(t, admin, hidden, partitions, 100, 200, 0)
		<-hp.Done
		require.NoError(t, hp.Err)
		harness.CreateTopic(t, admin, out, partitions, 1)
		allow(kafka.ResourceTopic, hidden, kafka.ACLOperationDescribe)
		allow(kafka.ResourceTopic, out, kafka.ACLOperationWrite, kafka.ACLOperationDescribe)
		allow(kafka.ResourceGroup, group, kafka.ACLOperationRead)
		err, took := run(t, password, hidden, out, group, 2*time.Minute)
		t.Logf("security: no READ on %s: Run returned after %s: %v", hidden, took.Round(time.Millisecond), err)
		require.Error(t, err)
		assert.Contains(t, err.Error(), hidden, "the error names the input topic")
		assert.Less(t, took, 45*time.Second, "a missing READ fails fast")
		harness.NothingCommitted(t, admin, group, hidden, partitions)
	})

	t.Run("no read on the group", func(t *testing.T) {
		out, group := stack.UniqueName("sec-out"), stack.UniqueName("sec-nogroup")
		harness.CreateTopic(t, admin, out, partitions, 1)
		allow(kafka.ResourceTopic, out, kafka.ACLOperationWrite, kafka.ACLOperationDescribe)
		err, took := run(t, password, in, out, group, 2*time.Minute)
		t.Logf("security: no READ on group %s: Run returned after %s: %v", group, took.Round(time.Millisecond), err)
		require.Error(t, err)
		assert.Contains(t, err.Error(), group, "the error names the group")
		harness.NothingCommitted(t, admin, group, in, partitions)
	})
}

// waitDone is closed once group's committed offsets on topic reach ends. It stops
// polling, leaving done open, after timeout (the caller's Run ends by its own context)
// or when stop closes (Run returned first).
func waitDone(brokers, group, topic string, ends map[int32]int64, timeout time.Duration, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			if c, err := harness.FetchCommitted(brokers, group, topic, len(ends)); err == nil && fmt.Sprint(c) == fmt.Sprint(ends) {
				close(done)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return done
}
