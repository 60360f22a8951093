package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// gokaDir finds integration/gokabench: next to this source file when the harness was
// built from a checkout (go run), else under the main module of the working directory.
func gokaDir(ctx context.Context) (string, error) {
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		d := filepath.Join(filepath.Dir(file), "..", "gokabench")
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Clean(d), nil
		}
		tried = append(tried, d)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		d := filepath.Join(filepath.Dir(gomod), "integration", "gokabench")
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		tried = append(tried, d)
	}
	return "", fmt.Errorf("goka contestant: integration/gokabench not found (tried %s); run the harness from the samsa checkout", strings.Join(tried, ", "))
}

// buildGoka builds the gokabench binary (its own module) into dir and returns its path.
func buildGoka(ctx context.Context, dir string) (string, error) {
	src, err := gokaDir(ctx)
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "gokabench")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = ctx.Err()
		}
		return "", fmt.Errorf("go build in %s: %w\n%s", src, err, out)
	}
	return bin, nil
}

// gokaArgs are the gokabench flags for one trial.
func (e *env) gokaArgs(group, out string, commitInterval time.Duration) []string {
	args := []string{"-brokers", e.o.brokers, "-input", e.in, "-output", out, "-group", group,
		"-commit-interval", commitInterval.String()}
	if e.o.gokaCompression != "" {
		args = append(args, "-compression", e.o.gokaCompression)
	}
	return args
}
