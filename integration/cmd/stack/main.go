// Command stack starts the real test stack (Kafka, Redis, Jaeger, a schema registry) on 127.0.0.1 and either
// runs a command with the environment contract exported, or prints it and waits.
//
//	go run ./integration/cmd/stack run -- go test ./...    start, run, stop
//	go run ./integration/cmd/stack up                      start, print exports, wait for Ctrl-C
//
// A component whose variable is already set (KAFKA_BROKERS, REDIS_ADDR,
// OTEL_EXPORTER_OTLP_ENDPOINT with JAEGER_QUERY_URL, SCHEMA_REGISTRY_URL) is not started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/samsa-go/samsa/integration/stack"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "stack:", err)
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) < 2 || (os.Args[1] != "run" && os.Args[1] != "up") {
		return errors.New("usage: stack run [flags] -- CMD [ARGS...] | stack up [flags]")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet("stack "+mode, flag.ContinueOnError)
	brokers := fs.Int("brokers", 1, "Kafka nodes to start (1 or 3)")
	noJaeger := fs.Bool("no-jaeger", false, "do not start Jaeger")
	noRedis := fs.Bool("no-redis", false, "do not start Redis")
	noRegistry := fs.Bool("no-registry", false, "do not start the schema registry")
	if err := fs.Parse(os.Args[2:]); err != nil {
		return err
	}
	if mode == "run" && fs.NArg() == 0 {
		return errors.New("run: no command given (stack run -- CMD ...)")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()

	var env []string
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	if os.Getenv(stack.EnvKafkaBrokers) == "" {
		t0 := time.Now()
		k, err := stack.StartKafka(startCtx, stack.KafkaOptions{Brokers: *brokers})
		if err != nil {
			return err
		}
		closers = append(closers, k.Close)
		env = append(env, stack.EnvKafkaBrokers+"="+k.Bootstrap())
		fmt.Fprintf(os.Stderr, "stack: kafka (%d node(s)) at %s, ready in %s\n", *brokers, k.Bootstrap(), time.Since(t0).Round(100*time.Millisecond))
	}
	if !*noRedis && os.Getenv(stack.EnvRedisAddr) == "" {
		r, err := stack.StartRedis(startCtx, stack.RedisOptions{})
		if err != nil {
			return err
		}
		closers = append(closers, r.Close)
		env = append(env, stack.EnvRedisAddr+"="+r.Addr())
		fmt.Fprintf(os.Stderr, "stack: redis at %s\n", r.Addr())
	}
	if !*noJaeger && (os.Getenv(stack.EnvOTLPEndpoint) == "" || os.Getenv(stack.EnvJaegerQuery) == "") {
		t0 := time.Now()
		j, err := stack.StartJaeger(startCtx, stack.JaegerOptions{})
		if err != nil {
			return err
		}
		closers = append(closers, j.Close)
		env = append(env, stack.EnvOTLPEndpoint+"=http://"+j.OTLPHTTPEndpoint(), stack.EnvJaegerQuery+"="+j.QueryURL())
		fmt.Fprintf(os.Stderr, "stack: jaeger query at %s, ready in %s\n", j.QueryURL(), time.Since(t0).Round(100*time.Millisecond))
	}

	if !*noRegistry && os.Getenv(stack.EnvSchemaRegistryURL) == "" {
		t0 := time.Now()
		r, err := stack.StartRegistry(startCtx, stack.RegistryOptions{})
		if err != nil {
			return err
		}
		closers = append(closers, r.Close)
		env = append(env, stack.EnvSchemaRegistryURL+"="+r.URL())
		fmt.Fprintf(os.Stderr, "stack: schema registry at %s, ready in %s\n", r.URL(), time.Since(t0).Round(100*time.Millisecond))
	}

	if mode == "up" {
		for _, e := range env {
			fmt.Printf("export %s\n", e)
		}
		fmt.Fprintln(os.Stderr, "stack: up; Ctrl-C stops it")
		<-ctx.Done()
		return nil
	}

	// On an interrupt the command gets SIGTERM and 30 s to clean up before it is killed.
	args := fs.Args()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); !errors.Is(err, context.Canceled) || cmd.ProcessState == nil {
		return err // its own status, or interrupted before it started
	}
	return nil // the command exited cleanly after the SIGTERM
}
