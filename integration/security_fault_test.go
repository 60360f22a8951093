package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/distributed"
	"github.com/samsa-go/samsa/integration/harness"
	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

// secEnv is one Kafka node with the client listeners the security tests use: PLAINTEXT
// (the test's own unauthenticated super-user clients), SCRAM-SHA-256 (SASL_PLAINTEXT,
// or SASL_SSL with TLS) and, with TLS, mutual TLS (principal User:CN=<stack.ClientCN>),
// all authorized by ACLs (no ACL means denied).
type secEnv struct {
	k     *stack.Kafka
	admin string // the PLAINTEXT listener
	ac    *kafka.AdminClient
}

// tlsPrincipal is the principal of a client of the mutual-TLS listener.
const tlsPrincipal = "User:CN=" + stack.ClientCN

func newSecEnv(t *testing.T, ctx context.Context, opts stack.KafkaOptions) *secEnv {
	t.Helper()
	start := time.Now()
	opts.SASL, opts.HeapMB = true, 256
	k, err := stack.StartKafka(ctx, opts)
	require.NoError(t, err, "start the secured broker")
	t.Cleanup(func() { k.Close() })
	t.Logf("broker (TLS %t, mutual %t) with SASL listener ready in %s",
		opts.TLS, opts.MutualTLS, time.Since(start).Round(time.Millisecond))
	e := &secEnv{k: k, admin: k.Bootstrap()}
	e.ac = harness.NewAdmin(t, e.admin)
	return e
}

// allow grants principal the operations on a resource (pattern literal or prefixed).
func (e *secEnv) allow(t *testing.T, principal string, rt kafka.ResourceType, name string, pt kafka.ResourcePatternType, ops ...kafka.ACLOperation) {
	t.Helper()
	var acls kafka.ACLBindings
	for _, op := range ops {
		acls = append(acls, kafka.ACLBinding{Type: rt, Name: name, ResourcePatternType: pt,
			Principal: principal, Host: "*", Operation: op, PermissionType: kafka.ACLPermissionTypeAllow})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := e.ac.CreateACLs(ctx, acls)
	require.NoError(t, err)
	for _, r := range res {
		require.Equal(t, kafka.ErrNoError, r.Error.Code(), "create ACL: %v", r.Error)
	}
}

// tlsProps are the overrides of a mutual-TLS client. The client key is given inline
// (ssl.key.pem), so the key itself is a secret the processor holds in its configuration:
// keyCanaries are its private scalar in hex and the PEM's base64 of it (the body from
// character 48 on: the 36 bytes before the scalar are the header every P-256 PKCS#8 key
// shares), which must appear in no log line.
func (e *secEnv) tlsProps(t *testing.T) (props map[string]any, keyCanaries []string) {
	t.Helper()
	key, err := os.ReadFile(e.k.TLSFiles().ClientKeyFile)
	require.NoError(t, err)
	props = e.k.TLSClientProps()
	delete(props, "ssl.key.location")
	props["ssl.key.pem"] = string(key)
	block, _ := pem.Decode(key)
	require.NotNil(t, block, "the client key is PEM")
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	ec, ok := priv.(*ecdsa.PrivateKey)
	require.True(t, ok, "the client key is ECDSA")
	scalar, err := ec.Bytes()
	require.NoError(t, err)
	body := strings.ReplaceAll(strings.Join(strings.Split(strings.TrimSpace(string(key)), "\n")[1:], ""), "-----END PRIVATE KEY-----", "")
	require.Greater(t, len(body), 48+40)
	return props, []string{hex.EncodeToString(scalar), body[48 : 48+40]}
}

// saslProps are the overrides of a SCRAM client of the SASL listener (SASL_SSL with TLS).
func (e *secEnv) saslProps(user, password string) map[string]any {
	props := map[string]any{"security.protocol": e.k.SASLProtocol(), "sasl.mechanisms": "SCRAM-SHA-256",
		"sasl.username": user, "sasl.password": password}
	if f := e.k.TLSFiles(); f != nil {
		props["ssl.ca.location"] = f.CAFile
	}
	return props
}

// seqTopic creates the topic name with n sequenced records over 100 keys and returns
// its end offsets.
func (e *secEnv) seqTopic(t *testing.T, name string, partitions, n int) map[int32]int64 {
	t.Helper()
	harness.CreateTopic(t, e.admin, name, partitions, 1)
	sp := harness.StartSeqProducer(t, e.admin, name, partitions, 100, n, 0)
	<-sp.Done
	require.NoError(t, sp.Err)
	return harness.EndOffsets(t, e.admin, name, partitions)
}

// secTopics creates an input topic with n sequenced records and an output topic.
func (e *secEnv) secTopics(t *testing.T, name string, partitions, n int) (in, out string, ends map[int32]int64) {
	t.Helper()
	in, out = stack.UniqueName(name+"-in"), stack.UniqueName(name+"-out")
	harness.CreateTopic(t, e.admin, out, partitions, 1)
	return in, out, e.seqTopic(t, in, partitions, n)
}

// runIdentity runs an identity processor until the group has committed ends (then it
// cancels and returns Run's result) or Run returns by itself, bounded by timeout.
func (e *secEnv) runIdentity(t *testing.T, cfg processor.Config, in, out string, ends map[int32]int64, log *slog.Logger, timeout time.Duration) (error, time.Duration) {
	t.Helper()
	p, err := processor.New(cfg, []processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
		identityHandler(processor.NewOutput(out, codec.String(), codec.String()), "sec"), processor.WithLogger(log))
	require.NoError(t, err)
	return runToCommitted(e.admin, p.Run, cfg.Group, in, ends, timeout)
}

// runToCommitted runs run until group has committed ends on topic (then cancels it)
// or run returns by itself, bounded by timeout; it returns run's result and how long
// it ran.
func runToCommitted(admin string, run func(context.Context) error, group, topic string, ends map[int32]int64,
	timeout time.Duration) (error, time.Duration) {
	return runUntil(run, timeout, 250*time.Millisecond, func() bool {
		c, err := harness.FetchCommitted(admin, group, topic, len(ends))
		return err == nil && maps.Equal(c, ends)
	})
}

// checkExactlyOnce reads out read_committed once every transaction on it has finished
// and asserts output == input exactly.
func (e *secEnv) checkExactlyOnce(t *testing.T, in, out string, partitions int) harness.EOSVerdict {
	t.Helper()
	inputs := harness.ReadTopic(t, e.admin, in, partitions, time.Minute)
	outEnds := harness.WaitTxnsFinished(t, e.admin, out, partitions, time.Minute)
	rc := harness.ReadTxnTopic(t, e.admin, out, partitions, "read_committed", outEnds)
	ru := harness.ReadTxnTopic(t, e.admin, out, partitions, "read_uncommitted", outEnds)
	v := harness.CheckEOS(inputs, rc, ru, true)
	harness.AssertExactlyOnce(t, "read_committed", len(inputs), v)
	return v
}

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
	e := newSecEnv(t, ctx, stack.KafkaOptions{})
	admin := e.admin // the unauthenticated super-user listener
	const user, password = "app", "app-secret"
	require.NoError(t, e.k.AddSCRAMUser(ctx, user, password))

	const partitions, n = 4, 2000
	in := stack.UniqueName("sec-in")
	ends := e.seqTopic(t, in, partitions, n)

	allow := func(rt kafka.ResourceType, name string, ops ...kafka.ACLOperation) {
		e.allow(t, "User:"+user, rt, name, kafka.ResourcePatternTypeLiteral, ops...)
	}
	allow(kafka.ResourceTopic, in, kafka.ACLOperationRead, kafka.ACLOperationDescribe)

	run := func(t *testing.T, pass, in, out, group string, timeout time.Duration) (error, time.Duration) {
		log, _ := harness.NewFileLog(t, "processor", slog.LevelInfo)
		cfg := processor.Config{Membership: processor.Membership{Brokers: e.k.SASLBootstrap(), SessionTimeout: 6 * time.Second,
			HeartbeatInterval: time.Second, Overrides: e.saslProps(user, pass)}, Group: group}
		return e.runIdentity(t, cfg, in, out, ends, log, timeout)
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

	// Each refused case commits nothing and fails with an error naming what is missing.
	writeOut := []kafka.ACLOperation{kafka.ACLOperationWrite, kafka.ACLOperationDescribe}
	for _, tc := range []struct {
		name, group, password string
		outOps                []kafka.ACLOperation
		groupACL, hideInput   bool
		names                 string // what the error names: authentication, output, input or group
		fast                  bool   // fails within 45 s
	}{
		{"wrong password", "sec-badpw", "not-the-password", writeOut, true, false, "authentication", true},
		{"no write on the output", "sec-nowrite", password, []kafka.ACLOperation{kafka.ACLOperationDescribe}, true, false, "output", false},
		{"no read on the input", "sec-noread", password, writeOut, true, true, "input", true},
		{"no read on the group", "sec-nogroup", password, writeOut, false, false, "group", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, out, group := in, stack.UniqueName("sec-out"), stack.UniqueName(tc.group)
			if tc.hideInput { // DESCRIBE only: the topic is visible, its records are not
				src = stack.UniqueName("sec-noread")
				e.seqTopic(t, src, partitions, 200)
				allow(kafka.ResourceTopic, src, kafka.ACLOperationDescribe)
			}
			harness.CreateTopic(t, admin, out, partitions, 1)
			allow(kafka.ResourceTopic, out, tc.outOps...)
			if tc.groupACL {
				allow(kafka.ResourceGroup, group, kafka.ACLOperationRead)
			}
			err, took := run(t, tc.password, src, out, group, 2*time.Minute)
			t.Logf("security: %s: Run returned after %s: %v", tc.name, took.Round(time.Millisecond), err)
			require.Error(t, err)
			msg := err.Error()
			if tc.names == "authentication" {
				msg = strings.ToLower(msg)
			}
			want := map[string]string{"authentication": "authentication", "output": out, "input": src, "group": group}[tc.names]
			assert.Contains(t, msg, want, "the error names the %s", tc.names)
			if tc.fast {
				assert.Less(t, took, 45*time.Second, "%s fails fast", tc.name)
			}
			harness.NothingCommitted(t, admin, group, src, partitions)
		})
	}
}

// TestFaultSecurityTLS runs samsa's clients against a broker that requires TLS (mutual,
// certificates generated at test time) on one listener and SCRAM over TLS on another,
// with ACLs enforced on both:
//
//   - processor at-least-once over mutual TLS, its client key given inline
//     (ssl.key.pem) with librdkafka's conf and security debug logging on: every record
//     processed, committed == end, none lost, and no piece of the key in the log;
//   - processor exactly-once over mutual TLS: output == input exactly (read_committed);
//   - processor exactly-once over SASL_SSL with ACLs on the input, the output, the group
//     and the transactional ids (WRITE and DESCRIBE on the prefix Group+"-", the ids the
//     processor uses by default): output == input exactly; without the
//     transactional-id ACL, Run fails with an error naming the transactional id, and
//     nothing is committed;
//   - distributed over SASL_SSL with ACLs on its technical topic and group, and over
//     mutual TLS: every process starts and runs, Run returns nil when stopped; a wrong
//     password fails Run fast, saying authentication failed;
//   - a processor with a state.Table checkpoint on Redis over TLS, as an ACL user
//     restricted to the table's keys and the commands of stateRedisACL: every record
//     applied once (sums == input), committed == end; with a wrong Redis password Run
//     fails fast with an error that says so and does not contain the password.
//
// Each case logs one "security:" line.
func TestFaultSecurityTLS(t *testing.T) {
	harness.RequireFaultSuite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	e := newSecEnv(t, ctx, stack.KafkaOptions{TLS: true, MutualTLS: true})
	// The mutual-TLS principal may do anything (its tests are about the transport);
	// the SCRAM users get only the ACLs each case names.
	for _, rt := range []kafka.ResourceType{kafka.ResourceTopic, kafka.ResourceGroup, kafka.ResourceTransactionalID} {
		e.allow(t, tlsPrincipal, rt, "*", kafka.ResourcePatternTypeLiteral, kafka.ACLOperationAll)
	}
	const partitions, n = 4, 2000
	base := processor.Config{Membership: processor.Membership{SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second}, StartTimeout: 20 * time.Second}

	t.Run("at-least-once over mutual TLS", func(t *testing.T) {
		in, out, ends := e.secTopics(t, "tls-alo", partitions, n)
		props, keyCanaries := e.tlsProps(t)
		props["debug"] = "conf,security"
		log, fl := harness.NewFileLog(t, "processor", slog.LevelDebug)
		cfg := base
		cfg.Brokers, cfg.Group, cfg.Overrides = e.k.TLSBootstrap(), stack.UniqueName("tls-alo"), props
		err, took := e.runIdentity(t, cfg, in, out, ends, log, 2*time.Minute)
		require.NoError(t, err)
		assert.Equal(t, ends, harness.CommittedOffsets(t, e.admin, cfg.Group, in, partitions))
		s := harness.TallySeq(harness.ReadTopic(t, e.admin, in, partitions, time.Minute), harness.ReadTopic(t, e.admin, out, partitions, time.Minute))
		assert.Zero(t, s.Lost, "lost (first: %v)", s.Missing)
		logs, err := os.ReadFile(fl.Path)
		require.NoError(t, err)
		assert.Contains(t, string(logs), "ssl.key.pem", "librdkafka's conf debug lists the inline key's property (redacted): the canary check below sees that log")
		found := 0
		for _, c := range keyCanaries {
			assert.NotContains(t, string(logs), c, "a piece of the client's private key is in the log")
			found += strings.Count(string(logs), c)
		}
		t.Logf("security: tls at-least-once: %d records, committed=end, lost=%d dups=%d in %s over mutual TLS; key canaries in %d bytes of debug log: %d",
			n, s.Lost, s.Dups, took.Round(time.Millisecond), len(logs), found)
	})

	t.Run("exactly-once over mutual TLS", func(t *testing.T) {
		in, out, ends := e.secTopics(t, "tls-eos", partitions, n)
		props, _ := e.tlsProps(t)
		log, _ := harness.NewFileLog(t, "processor", slog.LevelInfo)
		cfg := base
		cfg.Brokers, cfg.Group, cfg.Overrides, cfg.ExactlyOnce = e.k.TLSBootstrap(), stack.UniqueName("tls-eos"), props, true
		err, took := e.runIdentity(t, cfg, in, out, ends, log, 2*time.Minute)
		require.NoError(t, err)
		assert.Equal(t, ends, harness.CommittedOffsets(t, e.admin, cfg.Group, in, partitions))
		v := e.checkExactlyOnce(t, in, out, partitions)
		t.Logf("security: tls exactly-once: %d records in %s over mutual TLS; read_committed %s", n, took.Round(time.Millisecond), v)
	})

	t.Run("exactly-once over SASL_SSL with ACLs", func(t *testing.T) {
		const user, password = "eos-app", "eos-app-secret"
		require.NoError(t, e.k.AddSCRAMUser(ctx, user, password))
		principal := "User:" + user
		run := func(t *testing.T, name string, txnACL bool) (cfg processor.Config, in, out string, err error, took time.Duration) {
			in, out, ends := e.secTopics(t, name, partitions, n)
			cfg = base
			cfg.Brokers, cfg.Group, cfg.Overrides, cfg.ExactlyOnce = e.k.SASLBootstrap(), stack.UniqueName(name), e.saslProps(user, password), true
			e.allow(t, principal, kafka.ResourceTopic, in, kafka.ResourcePatternTypeLiteral, kafka.ACLOperationRead, kafka.ACLOperationDescribe)
			e.allow(t, principal, kafka.ResourceTopic, out, kafka.ResourcePatternTypeLiteral, kafka.ACLOperationWrite, kafka.ACLOperationDescribe)
			e.allow(t, principal, kafka.ResourceGroup, cfg.Group, kafka.ResourcePatternTypeLiteral, kafka.ACLOperationRead)
			if txnACL {
				// The default transactional id is Group + "-" + a suffix (InstanceID, or
				// random): a prefixed ACL on Group + "-" covers every instance's.
				e.allow(t, principal, kafka.ResourceTransactionalID, cfg.Group+"-", kafka.ResourcePatternTypePrefixed,
					kafka.ACLOperationWrite, kafka.ACLOperationDescribe)
			}
			log, _ := harness.NewFileLog(t, "processor", slog.LevelInfo)
			err, took = e.runIdentity(t, cfg, in, out, ends, log, 2*time.Minute)
			return cfg, in, out, err, took
		}
		t.Run("with the transactional-id ACL", func(t *testing.T) {
			_, in, out, err, took := run(t, "sasl-eos", true)
			require.NoError(t, err)
			v := e.checkExactlyOnce(t, in, out, partitions)
			t.Logf("security: sasl_ssl exactly-once with ACLs (topics, group, transactional-id prefix): %d records in %s; read_committed %s", n, took.Round(time.Millisecond), v)
		})
		t.Run("without the transactional-id ACL", func(t *testing.T) {
			cfg, in, out, err, took := run(t, "sasl-eos-noid", false)
			t.Logf("security: sasl_ssl exactly-once without the transactional-id ACL: Run returned after %s: %v", took.Round(time.Millisecond), err)
			require.Error(t, err)
			assert.Regexp(t, regexp.MustCompile(`transactional id "`+regexp.QuoteMeta(cfg.Group)+`-[^"]+"`), err.Error(), "the error names the transactional id")
			assert.Contains(t, err.Error(), "needs WRITE and DESCRIBE on TransactionalId", "the error says which ACL is missing")
			assert.Less(t, took, 45*time.Second, "a missing ACL fails fast")
			harness.NothingCommitted(t, e.admin, cfg.Group, in, partitions)
			assert.Equal(t, 0, len(harness.ReadTxnTopic(t, e.admin, out, partitions, "read_committed", harness.EndOffsets(t, e.admin, out, partitions))), "no output committed")
		})
	})

	t.Run("distributed", func(t *testing.T) {
		const user, password = "dist-app", "dist-app-secret"
		require.NoError(t, e.k.AddSCRAMUser(ctx, user, password))
		const procs, slices = 6, 3
		// run starts a node with procs processes and waits until all have started; it
		// then stops the node and returns Run's result, or returns Run's early failure.
		run := func(t *testing.T, brokers, name string, overrides map[string]any) (err error, started int, took time.Duration) {
			log, _ := harness.NewFileLog(t, "node", slog.LevelInfo)
			node, err := distributed.New(distributed.Config{Membership: distributed.Membership{Brokers: brokers, SessionTimeout: 6 * time.Second, HeartbeatInterval: time.Second, StopTimeout: 10 * time.Second, Overrides: overrides}, Partitions: slices, ReplicationFactor: 1},
				distributed.WithLogger(log))
			require.NoError(t, err)
			var mu sync.Mutex
			running := map[int]bool{}
			all := make(chan struct{})
			ps := make([]distributed.Process, procs)
			for i := range ps {
				ps[i] = func(ctx context.Context) error {
					mu.Lock()
					if !running[i] { // a process restarted after a rebalance closes nothing twice
						running[i] = true
						if len(running) == procs {
							close(all)
						}
					}
					mu.Unlock()
					<-ctx.Done()
					return nil
				}
			}
			rctx, rcancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer rcancel()
			start := time.Now()
			errc := make(chan error, 1)
			go func() { errc <- node.Run(rctx, name, ps) }()
			select {
			case err = <-errc:
				took = time.Since(start)
			case <-all:
				took = time.Since(start)
				rcancel()
				err = <-errc
			}
			mu.Lock()
			defer mu.Unlock()
			return err, len(running), took
		}
		t.Run("over SASL_SSL with ACLs", func(t *testing.T) {
			name := stack.UniqueName("sec-dist")
			principal := "User:" + user
			// The technical topic (created by the node) and the group.
			e.allow(t, principal, kafka.ResourceTopic, "samsa.distributed."+name, kafka.ResourcePatternTypeLiteral,
				kafka.ACLOperationCreate, kafka.ACLOperationDescribe, kafka.ACLOperationRead, kafka.ACLOperationWrite)
			e.allow(t, principal, kafka.ResourceGroup, name, kafka.ResourcePatternTypeLiteral, kafka.ACLOperationRead)
			err, started, took := run(t, e.k.SASLBootstrap(), name, e.saslProps(user, password))
			require.NoError(t, err)
			assert.Equal(t, procs, started)
			t.Logf("security: distributed over sasl_ssl with ACLs (technical topic, group): %d of %d processes started in %s; Run returned %v", started, procs, took.Round(time.Millisecond), err)
		})
		t.Run("over mutual TLS", func(t *testing.T) {
			props, _ := e.tlsProps(t)
			err, started, took := run(t, e.k.TLSBootstrap(), stack.UniqueName("sec-dist-tls"), props)
			require.NoError(t, err)
			assert.Equal(t, procs, started)
			t.Logf("security: distributed over mutual TLS: %d of %d processes started in %s; Run returned %v", started, procs, took.Round(time.Millisecond), err)
		})
		t.Run("wrong password", func(t *testing.T) {
			name := stack.UniqueName("sec-dist-badpw")
			const wrong = "wrong-pw-Zx81"
			err, started, took := run(t, e.k.SASLBootstrap(), name, e.saslProps(user, wrong))
			t.Logf("security: distributed wrong password: Run returned after %s: %v", took.Round(time.Millisecond), err)
			require.Error(t, err)
			assert.Contains(t, strings.ToLower(err.Error()), "authentication")
			assert.NotContains(t, err.Error(), wrong, "the error does not contain the password")
			assert.Zero(t, started)
			assert.Less(t, took, 30*time.Second, "a wrong password fails fast")
		})
	})

	t.Run("state on Redis over TLS with an ACL user", func(t *testing.T) {
		ns := strings.ReplaceAll(stack.UniqueName("sums"), "-", ".")
		const redisUser, redisPassword = "samsa-state", "state-secret-Qv27"
		r, err := stack.StartRedis(ctx, stack.RedisOptions{TLS: true,
			User: &stack.RedisUser{Name: redisUser, Password: redisPassword, Rules: stateRedisACL(ns)}})
		require.NoError(t, err)
		t.Cleanup(func() { r.Close() })
		in, _, ends := e.secTopics(t, "tls-state", partitions, n)
		props, _ := e.tlsProps(t)

		// runSums also checks that the password is in none of the processor's log lines.
		runSums := func(t *testing.T, group, password string) (error, time.Duration) {
			client := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: r.TLSConfig(), Username: redisUser, Password: password})
			t.Cleanup(func() { client.Close() })
			table, err := state.NewTable(client, ns, codec.String(), codec.Int64())
			require.NoError(t, err)
			log, fl := harness.NewFileLog(t, "processor", slog.LevelDebug)
			cfg := base
			cfg.Brokers, cfg.Group, cfg.Overrides = e.k.TLSBootstrap(), group, props
			p, err := processor.New(cfg, []processor.Input[string, string]{{Topic: in, Key: codec.String(), Value: codec.String()}},
				sumHandler(table), processor.WithCheckpoint(table), processor.WithLogger(log))
			require.NoError(t, err)
			runErr, took := runToCommitted(e.admin, p.Run, group, in, ends, 2*time.Minute)
			assert.Zero(t, fl.Count(password), "the Redis password is in the processor's log")
			return runErr, took
		}

		t.Run("restricted user", func(t *testing.T) {
			group := stack.UniqueName("tls-state")
			err, took := runSums(t, group, redisPassword)
			require.NoError(t, err)
			assert.Equal(t, ends, harness.CommittedOffsets(t, e.admin, group, in, partitions))
			// The sums, read back by the launcher's unrestricted default user.
			inputs := harness.ReadTopic(t, e.admin, in, partitions, time.Minute)
			type pk struct {
				p int32
				k string
			}
			want := map[pk]int64{}
			for _, rc := range inputs {
				v, err := strconv.ParseInt(string(rc.Value), 10, 64)
				require.NoError(t, err)
				want[pk{rc.Partition, string(rc.Key)}] += v
			}
			admin := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: r.TLSConfig()})
			defer admin.Close()
			table, err := state.NewTable(admin, ns, codec.String(), codec.Int64())
			require.NoError(t, err)
			mismatch := 0
			for at, w := range want {
				got, found, err := table.Partition(at.p).Get(ctx, at.k)
				require.NoError(t, err)
				if !found || got != w {
					mismatch++
				}
			}
			assert.Zero(t, mismatch, "keys whose sum differs from the input's")
			t.Logf("security: state on redis over tls as an ACL user (%s): %d records, %d keys, state_mismatch=%d, committed=end in %s",
				stateRedisACL(ns), n, len(want), mismatch, took.Round(time.Millisecond))
		})
		t.Run("wrong password", func(t *testing.T) {
			const wrong = "not-the-state-secret-Jk55"
			group := stack.UniqueName("tls-state-badpw")
			err, took := runSums(t, group, wrong)
			t.Logf("security: state wrong redis password: Run returned after %s: %v", took.Round(time.Millisecond), err)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "WRONGPASS", "the error says the password was refused")
			assert.NotContains(t, err.Error(), wrong, "the error does not contain the password")
			assert.NotContains(t, err.Error(), "Jk55")
			assert.Less(t, took, 30*time.Second, "a wrong password fails fast")
			harness.NothingCommitted(t, e.admin, group, in, partitions)
		})
	})
}

// sumHandler keeps, per input key, the sum of the (integer) input values in table,
// applied exactly once per batch with the batch's offsets.
func sumHandler(table *state.Table[string, int64]) processor.HandlerFunc[string, string] {
	return func(ctx context.Context, b *processor.Batch[string, string]) error {
		err := foldKeys(ctx, table, b, func(r processor.Record[string, string], sum *int64) error {
			v, err := strconv.ParseInt(r.Value, 10, 64)
			if err != nil {
				return fmt.Errorf("value %q: %w", r.Value, err)
			}
			*sum += v
			return nil
		})
		if errors.Is(err, state.ErrAlreadyApplied) {
			return nil
		}
		return err
	}
}

// stateRedisACL is the least a Redis ACL user needs to use state.NewRedis and
// state.NewTable stores in namespace ns (documented in the state package): the keys of
// the namespace, and the commands the stores and their Lua scripts run.
func stateRedisACL(ns string) string {
	return "resetkeys ~" + ns + ":* ~{" + ns + ":* resetchannels -@all " + stateRedisCommands
}

const stateRedisCommands = "+get +mget +set +mset +del +hget +hset +evalsha +eval"

// setRedisUser creates (or replaces the rules of) ACL user name on node, enabled, with
// password and rules in ACL SETUSER syntax.
func setRedisUser(ctx context.Context, node *redis.Client, name, password, rules string) error {
	args := []any{"ACL", "SETUSER", name, "on", ">" + password}
	for _, rule := range strings.Fields(rules) {
		args = append(args, rule)
	}
	return node.Do(ctx, args...).Err()
}

// aclDenials are node's ACL LOG entries, one line each: every command or key the ACL
// refused since the last ACL LOG RESET, even ones a client ignored.
func aclDenials(ctx context.Context, node *redis.Client) ([]string, error) {
	entries, err := node.ACLLog(ctx, 100).Result()
	var denied []string
	for _, en := range entries {
		denied = append(denied, fmt.Sprintf("%s %s %q x%d", en.Reason, en.Context, en.Object, en.Count))
	}
	return denied, err
}

// TestFaultSecurityRedisACL runs the whole state conformance suite (plain stores and
// tables, with and without TTL, Apply and PutFenced) on Redis over TLS as an ACL user
// granted only the keys of its namespaces and the commands of stateRedisACL, which shows
// that those rules are enough; and checks the user really is restricted (a key outside
// the namespace, a command not granted: NOPERM). Dropping any one of the nine commands
// makes the suite fail (checked by hand, by editing stateRedisCommands; this test does not
// repeat that).
func TestFaultSecurityRedisACL(t *testing.T) {
	harness.RequireFaultSuite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// stateNamespace names namespaces "st.<unique>": the key patterns use the glob "st.*".
	const user, password = "samsa-state", "state-secret-Rt40"
	rules := stateRedisACL("st.*")
	r, err := stack.StartRedis(ctx, stack.RedisOptions{TLS: true, User: &stack.RedisUser{Name: user, Password: password, Rules: rules}})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	client := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: r.TLSConfig(), Username: user, Password: password})
	t.Cleanup(func() { client.Close() })
	admin := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: r.TLSConfig()})
	t.Cleanup(func() { admin.Close() })

	require.ErrorContains(t, client.Set(ctx, "other:k", "v", 0).Err(), "NOPERM", "a key outside the namespaces")
	require.NoError(t, admin.Set(ctx, "st.x:k", "v", 0).Err())
	require.NoError(t, client.Get(ctx, "st.x:k").Err(), "a key of a namespace")
	require.NoError(t, admin.Del(ctx, "st.x:k").Err())
	require.ErrorContains(t, client.Incr(ctx, "st.x:n").Err(), "NOPERM", "a command not granted")
	require.ErrorContains(t, client.Keys(ctx, "*").Err(), "NOPERM", "a command not granted")
	require.NoError(t, admin.ACLLogReset(ctx).Err())
	start := time.Now()
	runStateConformanceAs(t, client, admin)
	took := time.Since(start)
	// None means nothing the suite runs needs more than the rules.
	denied, err := aclDenials(ctx, admin)
	require.NoError(t, err)
	assert.Empty(t, denied, "commands or keys the ACL denied during the suite")
	t.Logf("security: redis acl: state conformance suite passed=%t over tls as %q (%s) in %s; ACL denials during the suite: %d %v",
		!t.Failed(), user, rules, took.Round(time.Millisecond), len(denied), denied)

	t.Run("TableAdmin", func(t *testing.T) { tableAdminUnderACL(t, ctx, r, client, admin) })
}

// tableAdminUnderACL: the samsa command's table operations (TableAdmin: Partitions,
// Applied, Compare, ClearPartition) work as a user granted the processor's rules plus
// +hgetall and +scan, with no ACL denial; without +scan listing partitions is refused,
// without +hgetall reading applied offsets is, each with NOPERM.
func tableAdminUnderACL(t *testing.T, ctx context.Context, r *stack.Redis, writer, admin *redis.Client) {
	ns := stateNamespace(t, admin)
	tbl, err := state.NewTable(writer, ns, codec.String(), codec.String())
	require.NoError(t, err)
	for _, p := range []int32{3, 7} {
		var puts []state.Entry[string, string]
		for i := range 20 {
			puts = append(puts, state.Entry[string, string]{Key: fmt.Sprintf("k%d-%d", p, i), Value: "v"})
		}
		require.NoError(t, tbl.Apply(ctx, p, puts, nil, map[string]int64{"in": 20}))
	}
	asUser := func(name, extra string) *redis.Client {
		const password = "table-admin-secret-Kd82"
		require.NoError(t, setRedisUser(ctx, admin, name, password, stateRedisACL("st.*")+extra))
		c := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: r.TLSConfig(), Username: name, Password: password})
		t.Cleanup(func() { c.Close() })
		return c
	}
	require.NoError(t, admin.ACLLogReset(ctx).Err())

	ta, err := state.NewTableAdmin(asUser("samsa-table-admin", " +hgetall +scan"), ns)
	require.NoError(t, err)
	parts, err := ta.Partitions(ctx)
	require.NoError(t, err)
	assert.Equal(t, []int32{3, 7}, parts)
	applied, err := ta.Applied(ctx, 3)
	require.NoError(t, err)
	assert.Equal(t, map[string]int64{"in": 20}, applied)
	diffs, err := state.Compare(ctx, ta, ta)
	require.NoError(t, err)
	require.Len(t, diffs, 2)
	assert.True(t, diffs[0].Equal() && diffs[1].Equal() && diffs[0].KeysA == 20, "%+v", diffs)
	cleared, err := ta.ClearPartition(ctx, 7)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, cleared, 21, "20 data keys and the applied offsets")
	parts, err = ta.Partitions(ctx)
	require.NoError(t, err)
	assert.Equal(t, []int32{3}, parts)
	denied, err := aclDenials(ctx, admin)
	require.NoError(t, err)
	assert.Empty(t, denied, "ACL denials of the table admin's operations")

	noScan, err := state.NewTableAdmin(asUser("samsa-table-admin-noscan", " +hgetall"), ns)
	require.NoError(t, err)
	_, err = noScan.Partitions(ctx)
	assert.ErrorContains(t, err, "NOPERM", "listing partitions without +scan")
	noHGetAll, err := state.NewTableAdmin(asUser("samsa-table-admin-nohgetall", " +scan"), ns)
	require.NoError(t, err)
	_, err = noHGetAll.Applied(ctx, 3)
	assert.ErrorContains(t, err, "NOPERM", "reading applied offsets without +hgetall")
	t.Logf("security: redis acl: table admin: partitions, applied, compare and clear passed=%t with +hgetall +scan added; refused without +scan and without +hgetall", !t.Failed())
}
