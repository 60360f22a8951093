package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	redisClusterStartAttempts = 3
	redisClusterReadyTimeout  = 60 * time.Second
)

// RedisClusterOptions configures StartRedisCluster.
type RedisClusterOptions struct {
	// Masters is the number of master nodes, each owning a share of the 16384 slots, with
	// no replicas. Default: 3 (the fewest redis-cli --cluster create accepts).
	Masters int
	// Dir holds one data directory per node. Default: a new temp dir, removed by Close.
	Dir string
	// Args are extra redis-server arguments for every node.
	Args []string
}

// RedisCluster is a Redis Cluster of redis-server child processes on 127.0.0.1, without
// persistence. Its nodes' client ports are Addrs; each node's cluster bus has a port of its
// own (cluster-port), since port+10000 may be taken or above 65535.
type RedisCluster struct {
	dir     string
	tempDir bool
	nodes   []*Redis

	mu     sync.Mutex
	closed bool
}

// StartRedisCluster starts opts.Masters redis-server nodes in cluster mode on free ports,
// joins them with `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`, and
// waits until every node reports cluster_state:ok and knows every node.
func StartRedisCluster(ctx context.Context, opts RedisClusterOptions) (*RedisCluster, error) {
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.Masters < 3 {
		return nil, fmt.Errorf("stack: redis cluster: %d masters: redis-cli --cluster create needs at least 3", opts.Masters)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("stack: redis-server not found: install it (apt-get install redis-server)")
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, errors.New("stack: redis-cli not found: install it (apt-get install redis-tools)")
	}
	c := &RedisCluster{dir: opts.Dir}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "samsa-redis-cluster-"); err != nil {
			return nil, fmt.Errorf("stack: redis cluster: create data dir: %w", err)
		}
		c.tempDir = true
	}
	for attempt := 1; ; attempt++ {
		err = c.start(ctx, bin, cli, opts, attempt)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errRedisPortInUse) || attempt == redisClusterStartAttempts {
			break
		}
		c.killNodes()
	}
	return nil, errors.Join(err, c.Close())
}

// start launches the nodes on fresh ports (a data dir per attempt, so no stale
// nodes.conf), then creates the cluster.
func (c *RedisCluster) start(ctx context.Context, bin, cli string, opts RedisClusterOptions, attempt int) error {
	ports, err := freePorts(2 * opts.Masters)
	if err != nil {
		return err
	}
	c.nodes = c.nodes[:0]
	for i := range opts.Masters {
		port, bus := ports[2*i], ports[2*i+1]
		dir := filepath.Join(c.dir, fmt.Sprintf("try%d-node%d", attempt, i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("stack: redis cluster: create node dir: %w", err)
		}
		n := &Redis{bin: bin, port: port, dir: dir,
			proc: &process{name: fmt.Sprintf("redis-server (cluster node %d)", i), logPath: filepath.Join(dir, "redis-server.log")},
			args: append([]string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-node-timeout", "5000",
			}, opts.Args...),
		}
		c.nodes = append(c.nodes, n)
		if err := n.start(ctx); err != nil {
			return err
		}
	}

	cctx, cancel := context.WithTimeout(ctx, redisClusterReadyTimeout)
	defer cancel()
	argv := []string{"--cluster", "create"}
	argv = append(argv, c.Addrs()...)
	argv = append(argv, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(cctx, cli, argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("stack: redis-cli --cluster create: %w; output:\n%s", err, clusterTail(string(out), 3000))
	}
	return c.waitReady(cctx)
}

// waitReady polls CLUSTER INFO on every node until each says cluster_state:ok and counts
// every node, so a client that starts from any one address sees the whole cluster.
func (c *RedisCluster) waitReady(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
		defer clients[i].Close()
	}
	want := "cluster_known_nodes:" + strconv.Itoa(len(c.nodes))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		ready := 0
		for i, cl := range clients {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				last = fmt.Sprintf("node %d: %v", i, err)
				break
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, want) {
				last = fmt.Sprintf("node %d: %s", i, strings.Join(strings.Fields(info)[:min(4, len(strings.Fields(info)))], " "))
				break
			}
			ready++
		}
		if ready == len(clients) {
			return nil
		}
		for _, n := range c.nodes {
			if !n.proc.running() {
				return fmt.Errorf("stack: %s exited while the cluster formed; log tail:\n%s", n.proc.name, n.proc.logTail(3000))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stack: redis cluster not ready (last: %s): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

// Addrs are the nodes' client addresses, "127.0.0.1:port", for redis.ClusterOptions.Addrs.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// PIDs are the nodes' process ids.
func (c *RedisCluster) PIDs() []int {
	pids := make([]int, len(c.nodes))
	for i, n := range c.nodes {
		pids[i] = n.PID()
	}
	return pids
}

func (c *RedisCluster) killNodes() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.proc.kill())
	}
	return errors.Join(errs...)
}

// Close kills every node and removes the temp data dir. It is idempotent.
func (c *RedisCluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	err := c.killNodes()
	if c.tempDir {
		err = errors.Join(err, os.RemoveAll(c.dir))
	}
	return err
}

func clusterTail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
