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
	redisStartAttempts = 3
	redisReadyTimeout  = 20 * time.Second
	redisStopGrace     = 10 * time.Second
)

// errRedisPortInUse marks a start that lost its port to another process between freePorts
// and the bind; StartRedis then retries on a new port.
var errRedisPortInUse = errors.New("port already in use")

// RedisOptions configures StartRedis.
type RedisOptions struct {
	// Dir is the data directory (and where redis-server.log goes). Default: a new temp dir,
	// removed by Close.
	Dir string
	// Args are extra redis-server arguments, appended after the launcher's own.
	Args []string
}

// Redis is a redis-server child process listening on 127.0.0.1, without persistence.
type Redis struct {
	bin     string
	port    int
	dir     string
	tempDir bool // dir was created by StartRedis and is removed by Close
	args    []string
	proc    *process

	mu     sync.Mutex // serialises Stop, Kill, Restart and Close
	closed bool
}

// StartRedis starts redis-server on a free 127.0.0.1 port and waits until it answers PING.
func StartRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("stack: redis-server not found: install it (apt-get install redis-server) or set REDIS_ADDR")
	}
	r := &Redis{bin: bin, dir: opts.Dir, args: opts.Args}
	if r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "samsa-redis-"); err != nil {
			return nil, fmt.Errorf("stack: redis: create data dir: %w", err)
		}
		r.tempDir = true
	} else if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, fmt.Errorf("stack: redis: create data dir: %w", err)
	}
	r.proc = &process{name: "redis-server", logPath: filepath.Join(r.dir, "redis-server.log")}

	for attempt := 1; ; attempt++ {
		ports, perr := freePorts(1)
		if perr != nil {
			err = perr
			break
		}
		r.port = ports[0]
		err = r.start(ctx)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, errRedisPortInUse) || attempt == redisStartAttempts {
			break
		}
	}
	return nil, errors.Join(err, r.Close())
}

// Addr is the server's "127.0.0.1:port"; it stays the same across Restart.
func (r *Redis) Addr() string { return hostPort(r.port) }

// PID is the current redis-server process id (it changes on Restart).
func (r *Redis) PID() int { return r.proc.PID() }

// Stop shuts the server down with SIGTERM and waits for it to exit (SIGKILL after a grace
// period), for fault-injection tests.
func (r *Redis) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc.stop(redisStopGrace)
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
	if err := r.proc.stop(redisStopGrace); err != nil {
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
// errRedisPortInUse if the server exited because the port was taken.
func (r *Redis) start(ctx context.Context) error {
	// The log is appended to across restarts; remember where this run's output begins so an
	// "Address already in use" from an earlier run is not mistaken for this one's.
	var logStart int64
	if fi, err := os.Stat(r.proc.logPath); err == nil {
		logStart = fi.Size()
	}
	argv := append([]string{r.bin,
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--save", "", // no RDB snapshots: test data is throwaway
		"--appendonly", "no",
		"--protected-mode", "yes",
		"--daemonize", "no", // stay in the foreground so the PID we hold is the server
	}, r.args...)
	if err := r.proc.start(nil, argv...); err != nil {
		return err
	}
	err := r.waitReady(ctx)
	if err == nil {
		return nil
	}
	killErr := r.proc.kill()
	if strings.Contains(logSince(r.proc.logPath, logStart), "Address already in use") {
		return fmt.Errorf("stack: redis-server: port %d: %w; log tail:\n%s", r.port, errRedisPortInUse, r.proc.logTail(2000))
	}
	return errors.Join(err, killErr)
}

// waitReady polls PING until PONG, the process exits, ctx ends or redisReadyTimeout passes.
func (r *Redis) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisReadyTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{
		Addr:        r.Addr(),
		DialTimeout: time.Second,
		ReadTimeout: time.Second,
		MaxRetries:  -1, // we retry ourselves, and must notice an exited process promptly
	})
	defer c.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		pong, err := c.Ping(ctx).Result()
		if err == nil && pong == "PONG" {
			return nil
		}
		lastErr = err
		select {
		case <-r.proc.exited():
			return fmt.Errorf("stack: redis-server exited before answering PING on %s; log tail:\n%s", r.Addr(), r.proc.logTail(4000))
		case <-ctx.Done():
			return fmt.Errorf("stack: redis-server on %s did not answer PING (last error: %v): %w; log tail:\n%s",
				r.Addr(), lastErr, ctx.Err(), r.proc.logTail(4000))
		case <-tick.C:
		}
	}
}

// logSince returns the contents of path from byte offset off on, or "" if unreadable.
func logSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}
