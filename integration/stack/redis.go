package stack

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// StartRedis starts redis-server on a free 127.0.0.1 port and waits until it answers PING.
func StartRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	if opts.User != nil {
		if err := opts.User.validate(); err != nil {
			return nil, err
		}
	}
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
		err := os.WriteFile(r.conf, []byte(line), 0o600)
		if err == nil {
			err = os.Chmod(r.conf, 0o600) // a file left in RedisOptions.Dir keeps its mode
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("stack: redis: %w", err), r.Close())
		}
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
	argv = append(argv, r.args...)
	if err := r.proc.start(nil, argv...); err != nil {
		return err
	}
	err := r.waitReady(ctx)
	if err == nil {
		return nil
	}
	killErr := r.proc.kill()
	log := logSince(r.proc.logPath, logStart)
	if r.tls != nil && tlsUnsupported(log) {
		return fmt.Errorf("stack: %s was built without TLS support (it refuses the tls-* options); RedisOptions.TLS needs a build with TLS (Debian's redis-server has it); log tail:\n%s", r.bin, r.logTail(2000))
	}
	if strings.Contains(log, "Address already in use") {
		return fmt.Errorf("stack: redis-server: port %d: %w; log tail:\n%s", r.port, errRedisPortInUse, r.logTail(2000))
	}
	return errors.Join(err, killErr)
}

// passwordRe matches a password in an ACL rule (">secret"), as redis-server echoes a
// config line it refuses.
var passwordRe = regexp.MustCompile(`>\S+`)

// logTail is the end of the server's log, with ACL passwords redacted when it has a user.
func (r *Redis) logTail(n int) string {
	tail := r.proc.logTail(n)
	if r.conf != "" {
		tail = passwordRe.ReplaceAllString(tail, ">[redacted]")
	}
	return tail
}

// waitReady polls PING until PONG, the process exits, ctx ends or redisReadyTimeout passes.
func (r *Redis) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, redisReadyTimeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{
		Addr:        r.Addr(),
		TLSConfig:   r.TLSConfig(),
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
			return fmt.Errorf("stack: redis-server exited before answering PING on %s; log tail:\n%s", r.Addr(), r.logTail(4000))
		case <-ctx.Done():
			return fmt.Errorf("stack: redis-server on %s did not answer PING (last error: %v): %w; log tail:\n%s",
				r.Addr(), lastErr, ctx.Err(), r.logTail(4000))
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

// tlsUnsupported tells a redis-server built without TLS from its startup log: it rejects
// the first tls-* option as an unknown directive, the line quoted after ">>> " and then
// "Bad directive or wrong number of arguments".
func tlsUnsupported(log string) bool {
	i := strings.Index(log, ">>> 'tls-")
	return i >= 0 && strings.Contains(log[i:], "Bad directive")
}
