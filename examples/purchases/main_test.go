package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/samsa-go/samsa/internal/testlog"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/samsa-go/samsa/integration/stack"
	"github.com/samsa-go/samsa/internal/testwait"
	"github.com/samsa-go/samsa/samsatest"
	"github.com/samsa-go/samsa/state"
)

func TestMain(m *testing.M) { os.Exit(stack.RunTests(m)) }

// node is one running instance of the example.
type node struct {
	name string
	addr string
	logs *testlog.Buffer
	done chan error
}

func startNode(t *testing.T, ctx context.Context, cfg config) *node {
	t.Helper()
	n := &node{name: cfg.Node, logs: &testlog.Buffer{}, done: make(chan error, 1)}
	ready := make(chan string, 1)
	cfg.Out = log.New(n.logs, "", log.Ltime|log.Lmicroseconds)
	cfg.Ready = func(addr string) { ready <- addr }
	cfg.HTTP = "127.0.0.1:0"
	go func() { n.done <- run(ctx, cfg) }()
	select {
	case n.addr = <-ready:
	case err := <-n.done:
		t.Fatalf("node %s stopped before serving: %v\n%s", cfg.Node, err, n.logs)
	case <-time.After(90 * time.Second):
		t.Fatalf("node %s not serving after 90s\n%s", cfg.Node, n.logs)
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			t.Logf("log of node %s:\n%s", n.name, n.logs)
		}
	})
	return n
}

func (n *node) stop(t *testing.T) {
	t.Helper()
	select {
	case err := <-n.done:
		assert.NoError(t, err, "node %s", n.name)
	case <-time.After(60 * time.Second):
		t.Errorf("node %s did not stop within 60s", n.name)
	}
}

func (n *node) user(id string) (userReply, int, error) {
	resp, err := http.Get("http://" + n.addr + "/users/" + id)
	if err != nil {
		return userReply{}, 0, err
	}
	defer resp.Body.Close()
	var r userReply
	err = json.NewDecoder(resp.Body).Decode(&r)
	return r, resp.StatusCode, err
}

// waitTotals polls every user on every node until all answer the expected totals.
func waitTotals(t *testing.T, want map[string]Totals, nodes ...*node) {
	t.Helper()
	testwait.ForNoError(t, 2*time.Minute, "every node answers the expected totals", func() error {
		for _, n := range nodes {
			for user, w := range want {
				r, status, err := n.user(user)
				if err != nil || status != http.StatusOK || r.Count != w.Count || r.SpentCents != w.SpentCents {
					return fmt.Errorf("node %s user %s: status %d, %+v, err %v; want count %d spent %d", n.name, user, status, r, err, w.Count, w.SpentCents)
				}
				if r.ServedBy != n.name || r.Partition != state.PartitionOf([]byte(user), 8) {
					return fmt.Errorf("node %s user %s: %+v", n.name, user, r)
				}
			}
		}
		return nil
	})
}

// TestPurchasesOneNode runs one node with the in-memory table (no REDIS_ADDR), on the
// embedded broker or KAFKA_BROKERS.
func TestPurchasesOneNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	name := stack.UniqueName("purchases")
	const events, users = 400, 12
	n := startNode(t, ctx, config{Topic: name, Namespace: strings.ReplaceAll(name, "-", "."), Group: name, Node: "solo",
		Partitions: 8, Produce: events, Users: users})
	waitTotals(t, expected(events, users), n)
	r, status, err := n.user("nobody")
	require.NoError(t, err)
	assert.Equal(t, http.StatusNotFound, status)
	assert.Equal(t, state.PartitionOf([]byte("nobody"), 8), r.Partition)
	cancel()
	n.stop(t)
}

// TestPurchasesTwoNodes runs two nodes on one Kafka (KAFKA_BROKERS, or an embedded broker
// both reach) and one Redis (REDIS_ADDR, or a redis-server the test starts). The second
// node joins while the first is counting, so partitions move under load; every user's
// totals must come out exact on both nodes' endpoints.
func TestPurchasesTwoNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: needs redis-server (or REDIS_ADDR)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	name := stack.UniqueName("purchases")
	if os.Getenv("KAFKA_BROKERS") == "" {
		b := samsatest.NewBroker(t, samsatest.Topic{Name: name, Partitions: 8})
		t.Setenv("KAFKA_BROKERS", b.Addr())
	}
	redisAddr := stack.RedisAddr(t)

	const half, users = 1500, 25
	base := config{Topic: name, Namespace: strings.ReplaceAll(name, "-", "."), Group: name, Partitions: 8, Users: users, RedisAddr: redisAddr}
	cfgA, cfgB := base, base
	cfgA.Node, cfgA.Produce = "a", half
	cfgB.Node = "b"

	ctxA, stopA := context.WithCancel(ctx)
	defer stopA()
	a := startNode(t, ctxA, cfgA)
	testwait.For(t, 90*time.Second, "node a applies a batch", func() bool { return strings.Contains(a.logs.String(), "node a: partition") })
	ctxB, stopB := context.WithCancel(ctx)
	defer stopB()
	b := startNode(t, ctxB, cfgB)
	testwait.For(t, 90*time.Second, "node b is assigned a partition", func() bool { return strings.Contains(b.logs.String(), "node b: handles partition") })

	// The second half arrives while both nodes own partitions.
	require.NoError(t, produce(ctx, os.Getenv("KAFKA_BROKERS"), name, half, half, users))
	waitTotals(t, expected(2*half, users), a, b)
	t.Logf("batches applied by node a: %d, by node b: %d",
		strings.Count(a.logs.String(), ": applied "), strings.Count(b.logs.String(), ": applied "))
	assert.Contains(t, b.logs.String(), "node b: partition", "node b applied batches of its partitions")

	stopB()
	b.stop(t)
	stopA()
	a.stop(t)
}
