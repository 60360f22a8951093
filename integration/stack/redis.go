package stack

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures StartRedis.
type RedisOptions struct {
	// Dir is the data directory (and where redis-server.log goes). Default: a new temp dir,
	// removed by Close.
	Dir string
	// Args are extra redis-server arguments, appended after the launcher's own.
	Args []string
	// TLS serves Redis over TLS only (tls-port; the plaintext port is off) with
	// certificates generated at start (Redis.TLSFiles; clients need not show one). Clients
	// connect to Addr with Redis.TLSConfig (go-redis Options.TLSConfig).
	TLS bool
	// User, when set, is an ACL user created at start (a "user" line of the server's
	// config file, so it survives Restart). The default user stays enabled without a
	// password: the launcher pings with it, and a test can inspect the data with it.
	User *RedisUser
}

// RedisUser is an ACL user: its name, password and ACL rules in ACL SETUSER syntax
// (for example "~app:* +get +set"). The user is created enabled ("on").
type RedisUser struct {
	Name     string
	Password string
	Rules    string
}

func (u *RedisUser) validate() error {
	var errs []error
	if u.Name == "" || strings.ContainsAny(u.Name, " \t\r\n") {
		errs = append(errs, fmt.Errorf("stack: RedisUser.Name %q: want a non-empty name without spaces", u.Name))
	}
	// Quotes and backslashes would be parsed by the config file's reader.
	if u.Password == "" || strings.ContainsAny(u.Password, " \t\r\n\"'\\") {
		errs = append(errs, errors.New("stack: RedisUser.Password: want a non-empty password without spaces, quotes or backslashes"))
	}
	if strings.ContainsAny(u.Rules, "\r\n\"'\\") {
		errs = append(errs, errors.New("stack: RedisUser.Rules: want one line without quotes or backslashes"))
	}
	return errors.Join(errs...)
}

// Redis is a redis-server child process listening on 127.0.0.1, without persistence.
type Redis struct {
	bin     string
	port    int
	dir     string
	tempDir bool // dir was created by StartRedis and is removed by Close
	args    []string
	conf    string    // the config file holding the ACL user, "" without one
	tls     *TLSFiles // with RedisOptions.TLS
	proc    *process

	mu     sync.Mutex // serialises Stop, Kill, Restart and Close
	closed bool
}

// redisServer finds redis-server (and, for a cluster, redis-cli) in PATH.
func redisServer(withCLI bool) (bin, cli string, err error) {
	if bin, err = exec.LookPath("redis-server"); err != nil {
		return "", "", errors.New("stack: redis-server not found: install it (apt-get install redis-server) or set REDIS_ADDR")
	}
	if withCLI {
		if cli, err = exec.LookPath("redis-cli"); err != nil {
			return "", "", errors.New("stack: redis-cli not found: install it (apt-get install redis-tools)")
		}
	}
	return bin, cli, nil
}

// newRedis makes the data dir and the Redis that will run there.
func newRedis(bin, dir string, args []string) (*Redis, error) {
	dir, temp, err := dataDir(dir, "redis")
	if err != nil {
		return nil, err
	}
	return &Redis{bin: bin, dir: dir, tempDir: temp, args: args,
		proc: &process{name: "redis-server", logPath: filepath.Join(dir, "redis-server.log")}}, nil
}

// StartRedis starts redis-server on a free 127.0.0.1 port and waits until it answers PING.
func StartRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	if opts.User != nil {
		if err := opts.User.validate(); err != nil {
			return nil, err
		}
	}
	bin, _, err := redisServer(false)
	if err != nil {
		return nil, err
	}
	r, err := newRedis(bin, opts.Dir, opts.Args)
	if err != nil {
		return nil, err
	}
	if opts.TLS {
		if r.tls, err = GenerateTLS(filepath.Join(r.dir, "tls")); err != nil {
			return nil, errors.Join(err, r.Close())
		}
	}
	if u := opts.User; u != nil {
		// A config file (0600) rather than arguments, so the password is not on the
		// command line for every process listing to show.
		r.conf = filepath.Join(r.dir, "redis.conf")
		line := fmt.Sprintf("user %s on >%s %s\n", u.Name, u.Password, u.Rules)
		if err := writeFile(r.conf, []byte(line), 0o600); err != nil {
			return nil, errors.Join(err, r.Close())
		}
		// redis-server echoes a config line it refuses: redact the passwords (">secret").
		r.proc.redact = func(s string) string { return passwordRe.ReplaceAllString(s, ">[redacted]") }
	}
	err = retryPorts(func() error {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		r.port = ports[0]
		return r.start(ctx)
	})
	if err != nil {
		return nil, errors.Join(err, r.Close())
	}
	return r, nil
}

var passwordRe = regexp.MustCompile(`>\S+`)

// Addr is the server's "127.0.0.1:port" (with RedisOptions.TLS, its TLS port); it stays
// the same across Restart.
func (r *Redis) Addr() string { return hostPort(r.port) }

// TLSFiles are the certificates of a server started with RedisOptions.TLS, else nil.
func (r *Redis) TLSFiles() *TLSFiles { return r.tls }

// TLSConfig is a client TLS configuration that trusts the server's CA (go-redis
// Options.TLSConfig), nil without RedisOptions.TLS. It is new on each call.
func (r *Redis) TLSConfig() *tls.Config {
	if r.tls == nil {
		return nil
	}
	cfg, err := r.tls.ClientConfig(false)
	if err != nil {
		// The files were written at start and are only removed by Close.
		panic(fmt.Sprintf("stack: redis: %v", err))
	}
	return cfg
}

// PID is the current redis-server process id (it changes on Restart).
func (r *Redis) PID() int { return r.proc.PID() }

// Stop shuts the server down with SIGTERM and waits for it to exit (SIGKILL after 10 s),
// for fault-injection tests.
func (r *Redis) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.stop(10 * time.Second)
}

// Kill SIGKILLs the server and waits for it to exit.
func (r *Redis) Kill() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.kill()
}

// Restart stops the server if it is still running and starts it again on the same port and
// data dir, waiting until it answers PING. Data is not kept (persistence is off).
func (r *Redis) Restart(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("stack: redis: Restart after Close")
	}
	if err := r.proc.stop(10 * time.Second); err != nil {
		return err
	}
	// No retry on a new port: callers rely on Addr staying the same.
	return r.start(ctx)
}

// Close kills the server if it is running and removes the temp data dir. It is idempotent.
func (r *Redis) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.proc.kill()
	if r.tempDir {
		err = errors.Join(err, os.RemoveAll(r.dir))
	}
	return err
}

// start launches redis-server on r.port and waits for PONG. It returns an error wrapping
// errPortInUse if the server exited because the port was taken.
func (r *Redis) start(ctx context.Context) error {
	argv := []string{r.bin}
	if r.conf != "" {
		argv = append(argv, r.conf) // the file must come first
	}
	port := []string{"--port", strconv.Itoa(r.port)}
	if r.tls != nil {
		port = []string{"--port", "0", "--tls-port", strconv.Itoa(r.port),
			"--tls-cert-file", r.tls.ServerCertFile, "--tls-key-file", r.tls.ServerKeyFile,
			"--tls-ca-cert-file", r.tls.CAFile, "--tls-auth-clients", "no"}
	}
	argv = append(append(argv, port...),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--save", "", // no RDB snapshots: test data is throwaway
		"--appendonly", "no",
		"--protected-mode", "yes",
		"--daemonize", "no", // stay in the foreground so the PID we hold is the server
	)
	if err := r.proc.start(nil, append(argv, r.args...)...); err != nil {
		return err
	}
	c := redis.NewClient(&redis.Options{
		Addr:        r.Addr(),
		TLSConfig:   r.TLSConfig(),
		DialTimeout: time.Second,
		ReadTimeout: time.Second,
		MaxRetries:  -1, // we retry ourselves, and must notice an exited process promptly
	})
	defer c.Close()
	err := poll(ctx, 20*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		return c.Ping(ctx).Err()
	}, r.proc)
	if err == nil {
		return nil
	}
	err = r.proc.failed(err)
	if r.tls != nil && tlsUnsupported(r.proc.output()) {
		return fmt.Errorf("stack: %s was built without TLS support (it refuses the tls-* options); RedisOptions.TLS needs a build with TLS (Debian's redis-server has it); log tail:\n%s", r.bin, r.proc.logTail(2000))
	}
	return err
}

// tlsUnsupported tells a redis-server built without TLS from its startup log: it rejects
// the first tls-* option as an unknown directive, the line quoted after ">>> " and then
// "Bad directive or wrong number of arguments".
func tlsUnsupported(log string) bool {
	i := strings.Index(log, ">>> 'tls-")
	return i >= 0 && strings.Contains(log[i:], "Bad directive")
}

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
	bin, dir string
	tempDir  bool
	nodes    []*Redis
	close    func() error
}

// StartRedisCluster starts opts.Masters redis-server nodes in cluster mode on free ports,
// joins them with `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`, and
// waits until every node reports cluster_state:ok and knows every node.
func StartRedisCluster(ctx context.Context, opts RedisClusterOptions) (*RedisCluster, error) {
	if opts.Masters = cmp.Or(opts.Masters, 3); opts.Masters < 3 {
		return nil, fmt.Errorf("stack: redis cluster: %d masters: redis-cli --cluster create needs at least 3", opts.Masters)
	}
	bin, cli, err := redisServer(true)
	if err != nil {
		return nil, err
	}
	c := &RedisCluster{bin: bin}
	if c.dir, c.tempDir, err = dataDir(opts.Dir, "redis-cluster"); err != nil {
		return nil, err
	}
	c.close = sync.OnceValue(func() error {
		err := c.killNodes()
		if c.tempDir {
			err = errors.Join(err, os.RemoveAll(c.dir))
		}
		return err
	})
	attempt := 0
	err = retryPorts(func() error {
		attempt++
		c.killNodes()
		return c.start(ctx, cli, opts, attempt)
	})
	if err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// start launches the nodes on fresh ports (a data dir per attempt, so no stale
// nodes.conf), then creates the cluster.
func (c *RedisCluster) start(ctx context.Context, cli string, opts RedisClusterOptions, attempt int) error {
	ports, err := freePorts(2 * opts.Masters)
	if err != nil {
		return err
	}
	c.nodes = c.nodes[:0]
	for i := range opts.Masters {
		dir := filepath.Join(c.dir, fmt.Sprintf("try%d-node%d", attempt, i))
		n, err := newRedis(c.bin, dir, append([]string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(ports[2*i+1]),
			"--cluster-node-timeout", "5000",
		}, opts.Args...))
		if err != nil {
			return err
		}
		n.port, n.proc.name = ports[2*i], fmt.Sprintf("redis-server (cluster node %d)", i)
		c.nodes = append(c.nodes, n)
		if err := n.start(ctx); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	argv := append(append([]string{"--cluster", "create"}, c.Addrs()...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, argv...).CombinedOutput(); err != nil {
		return fmt.Errorf("stack: redis-cli --cluster create: %w; output:\n%s", err, lastBytes(out, 3000))
	}
	return c.waitReady(ctx)
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
	procs := make([]*process, len(c.nodes))
	for i, n := range c.nodes {
		procs[i] = n.proc
	}
	return poll(ctx, time.Minute, 50*time.Millisecond, func(ctx context.Context) error {
		for i, cl := range clients {
			info, err := cl.ClusterInfo(ctx).Result()
			f := strings.Fields(info)
			if err == nil && (!slices.Contains(f, "cluster_state:ok") || !slices.Contains(f, want)) {
				err = errors.New(strings.Join(f[:min(4, len(f))], " "))
			}
			if err != nil {
				return fmt.Errorf("node %d: %w", i, err)
			}
		}
		return nil
	}, procs...)
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
	return c.close()
}
