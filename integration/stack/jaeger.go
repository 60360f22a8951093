package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// jaegerVersion must match the require in integration/tools/jaeger/go.mod: it names the
// cache directory, so bumping one without the other would keep using the old binary.
const jaegerVersion = "v1.55.0"

const (
	jaegerStartAttempts = 3
	jaegerReadyTimeout  = 60 * time.Second
	jaegerQueryLimit    = 1000 // traces per Traces call; the memory store returns the newest
)

// ErrJaegerTraceNotFound is returned by Trace while Jaeger does not (yet) have the trace.
var ErrJaegerTraceNotFound = errors.New("stack: jaeger: trace not found")

// errJaegerPortInUse marks a start that lost one of its ports between freePorts and the
// bind; StartJaeger then retries with new ports.
var errJaegerPortInUse = errors.New("port already in use")

// JaegerBinary returns the path of the Jaeger all-in-one binary, building it from the Go
// module proxy into CacheDir() on first use (a few minutes). Concurrent callers, including
// other test binaries, wait for one build.
func JaegerBinary(ctx context.Context) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "jaeger-"+jaegerVersion)
	bin := filepath.Join(dir, "jaeger-all-in-one")
	err = withFileLock(filepath.Join(cache, "jaeger.lock"), func() error {
		if _, err := os.Stat(bin); err == nil {
			return nil
		}
		return buildJaeger(ctx, dir, bin)
	})
	if err != nil {
		return "", err
	}
	return bin, nil
}

func buildJaeger(ctx context.Context, dir, bin string) error {
	modDir, err := jaegerToolsDir()
	if err != nil {
		return err
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("stack: building Jaeger %s needs the go command in PATH (or set %s and %s to a running Jaeger): %w",
			jaegerVersion, EnvOTLPEndpoint, EnvJaegerQuery, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("stack: jaeger cache dir: %w", err)
	}
	// Build next to the final path and rename, so an interrupted build never leaves a
	// truncated binary that later runs would take as cached.
	tmp, err := os.CreateTemp(dir, "jaeger-all-in-one.tmp-*")
	if err != nil {
		return fmt.Errorf("stack: jaeger cache dir: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // no-op once renamed

	cmd := exec.CommandContext(ctx, gobin, "build", "-o", tmp.Name(), "github.com/jaegertracing/jaeger/cmd/all-in-one")
	cmd.Dir = modDir
	// GOWORK=off: the tools module must build alone even if a go.work includes the repo.
	// CGO_ENABLED=0: no C toolchain needed, and a static binary.
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("stack: build Jaeger %s (go build in %s): %w\n%s", jaegerVersion, modDir, err, lastBytes(out, 4000))
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return fmt.Errorf("stack: install the Jaeger binary: %w", err)
	}
	return nil
}

// jaegerToolsDir finds integration/tools/jaeger from this source file's location, so it
// works whatever the working directory (package dir under go test, repo root for the CLI).
func jaegerToolsDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", fmt.Errorf("stack: cannot locate the Jaeger tools module (source path %q; built with -trimpath?): run from a samsa checkout", file)
	}
	dir := filepath.Join(filepath.Dir(file), "..", "tools", "jaeger")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("stack: the Jaeger tools module is missing (%w): run from a samsa checkout", err)
	}
	return dir, nil
}

// JaegerOptions configures StartJaeger. It has no fields yet.
type JaegerOptions struct{}

// Jaeger is a Jaeger all-in-one child process with in-memory storage, every port of which
// is a free port on 127.0.0.1, so several can run at once.
type Jaeger struct {
	JaegerQuery // query helpers, on QueryURL

	otlpHTTP, otlpGRPC string
	proc               *process
	logDir             string

	mu     sync.Mutex
	closed bool
}

// StartJaeger builds Jaeger if needed (see JaegerBinary), starts it and waits until its
// query API answers and its OTLP receivers listen.
func StartJaeger(ctx context.Context, opts JaegerOptions) (*Jaeger, error) {
	bin, err := JaegerBinary(ctx)
	if err != nil {
		return nil, err
	}
	logDir, err := os.MkdirTemp("", "samsa-jaeger-")
	if err != nil {
		return nil, fmt.Errorf("stack: jaeger: create log dir: %w", err)
	}
	for attempt := 1; ; attempt++ {
		j, err := startJaeger(ctx, bin, logDir)
		if err == nil {
			return j, nil
		}
		if !errors.Is(err, errJaegerPortInUse) || attempt == jaegerStartAttempts {
			return nil, errors.Join(err, os.RemoveAll(logDir))
		}
	}
}

func startJaeger(ctx context.Context, bin, logDir string) (*Jaeger, error) {
	tcp, err := freePorts(8)
	if err != nil {
		return nil, err
	}
	udp, err := freeUDPPorts(3)
	if err != nil {
		return nil, err
	}
	otlpGRPC, otlpHTTP, queryHTTP := hostPort(tcp[0]), hostPort(tcp[1]), hostPort(tcp[2])
	argv := []string{bin,
		"--log-level=warn",
		"--collector.otlp.enabled=true",
		"--collector.otlp.grpc.host-port=" + otlpGRPC,
		"--collector.otlp.http.host-port=" + otlpHTTP,
		"--query.http-server.host-port=" + queryHTTP,
		"--query.grpc-server.host-port=" + hostPort(tcp[3]),
		"--collector.grpc-server.host-port=" + hostPort(tcp[4]),
		"--collector.http-server.host-port=" + hostPort(tcp[5]),
		"--admin.http.host-port=" + hostPort(tcp[6]),
		"--http-server.host-port=" + hostPort(tcp[7]), // agent sampling/config server
		"--processor.jaeger-compact.server-host-port=" + hostPort(udp[0]),
		"--processor.jaeger-binary.server-host-port=" + hostPort(udp[1]),
		"--processor.zipkin-compact.server-host-port=" + hostPort(udp[2]),
		// The Zipkin collector (--collector.zipkin.host-port) is off by default: no port.
		// The embedded agent reports to --collector.grpc-server.host-port by default.
	}
	env := []string{
		"SPAN_STORAGE_TYPE=memory",
		// Jaeger's own tracer exports to OTLP localhost:4317 by default, which may be another
		// developer's Jaeger: sample nothing, and point it at this instance in any case.
		"OTEL_TRACES_SAMPLER=always_off",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + otlpGRPC,
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://" + otlpGRPC,
	}

	logPath := filepath.Join(logDir, "jaeger.log")
	var logStart int64 // this attempt's output starts here: the log is shared by attempts
	if fi, err := os.Stat(logPath); err == nil {
		logStart = fi.Size()
	}
	p, err := startProcess("jaeger-all-in-one", logPath, env, argv...)
	if err != nil {
		return nil, err
	}
	j := &Jaeger{
		JaegerQuery: JaegerQuery{URL: "http://" + queryHTTP},
		otlpHTTP:    otlpHTTP,
		otlpGRPC:    otlpGRPC,
		proc:        p,
		logDir:      logDir,
	}
	if err := j.waitReady(ctx); err != nil {
		killErr := p.kill()
		if strings.Contains(strings.ToLower(logSince(logPath, logStart)), "address already in use") {
			return nil, fmt.Errorf("stack: jaeger-all-in-one: %w; log tail:\n%s", errJaegerPortInUse, p.logTail(2000))
		}
		return nil, errors.Join(err, killErr)
	}
	return j, nil
}

// waitReady waits for /api/services to answer 200 and then for the OTLP ports.
func (j *Jaeger) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(jaegerReadyTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var lastErr error
	for {
		if _, lastErr = j.Services(ctx); lastErr == nil {
			break
		}
		select {
		case <-j.proc.exited():
			return fmt.Errorf("stack: jaeger-all-in-one exited before its query API answered; log tail:\n%s", j.proc.logTail(4000))
		case <-ctx.Done():
			return fmt.Errorf("stack: jaeger-all-in-one query API %s not ready (last error: %v): %w; log tail:\n%s",
				j.URL, lastErr, ctx.Err(), j.proc.logTail(4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
	// The collector starts before the query service, so these are normally already up.
	for _, addr := range []string{j.otlpHTTP, j.otlpGRPC} {
		if err := waitTCP(j.proc, addr, max(time.Until(deadline), time.Second)); err != nil {
			return err
		}
	}
	return nil
}

// OTLPHTTPEndpoint is the OTLP/HTTP receiver's "127.0.0.1:port", for
// otlptracehttp.WithEndpoint together with otlptracehttp.WithInsecure.
func (j *Jaeger) OTLPHTTPEndpoint() string { return j.otlpHTTP }

// OTLPGRPCEndpoint is the OTLP/gRPC receiver's "127.0.0.1:port".
func (j *Jaeger) OTLPGRPCEndpoint() string { return j.otlpGRPC }

// QueryURL is the query API and UI base URL, "http://127.0.0.1:port".
func (j *Jaeger) QueryURL() string { return j.URL }

// PID is the jaeger-all-in-one process id.
func (j *Jaeger) PID() int { return j.proc.PID() }

// Close kills Jaeger (its storage is in memory, nothing to flush) and removes its log. It
// is idempotent.
func (j *Jaeger) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	return errors.Join(j.proc.kill(), os.RemoveAll(j.logDir))
}

// JaegerQuery reads traces over Jaeger's HTTP query API (the one its UI uses). It works
// against any Jaeger, e.g. JaegerQuery{URL: os.Getenv(EnvJaegerQuery)}.
type JaegerQuery struct {
	URL string // base URL, e.g. "http://127.0.0.1:16686"
}

// JaegerTrace is a trace as the query API returns it.
type JaegerTrace struct {
	TraceID   string                   `json:"traceID"` // 32 hex digits, as OTel prints it
	Spans     []JaegerSpan             `json:"spans"`
	Processes map[string]JaegerProcess `json:"processes"` // by JaegerSpan.ProcessID
}

// JaegerSpan is one span of a JaegerTrace.
type JaegerSpan struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []JaegerRef `json:"references"`
	Tags          []JaegerKV  `json:"tags"` // OTel attributes, plus span.kind, otel.* ...
	ProcessID     string      `json:"processID"`
	StartTime     int64       `json:"startTime"` // microseconds since the Unix epoch
	Duration      int64       `json:"duration"`  // microseconds
}

// JaegerRef links a span to another; a parent is RefType "CHILD_OF".
type JaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// JaegerKV is a tag. Value is as decoded from JSON: string, bool or float64 (Type says
// "string", "bool", "int64", "float64" or "binary").
type JaegerKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// JaegerProcess is the emitting process: ServiceName is the OTel service.name.
type JaegerProcess struct {
	ServiceName string     `json:"serviceName"`
	Tags        []JaegerKV `json:"tags"`
}

// Tag returns the value of the span's tag key.
func (s JaegerSpan) Tag(key string) (any, bool) {
	for _, kv := range s.Tags {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// SpanByOperation returns the first span named op.
func (t JaegerTrace) SpanByOperation(op string) (JaegerSpan, bool) {
	for _, s := range t.Spans {
		if s.OperationName == op {
			return s, true
		}
	}
	return JaegerSpan{}, false
}

// Services lists the service names Jaeger has spans from.
func (q JaegerQuery) Services(ctx context.Context) ([]string, error) {
	var services []string
	err := q.get(ctx, "/api/services", &services)
	return services, err
}

// Traces returns the newest traces (up to 1000) that have spans from service, searched
// over the last two days (Jaeger's default lookback). Spans arrive asynchronously: poll.
func (q JaegerQuery) Traces(ctx context.Context, service string) ([]JaegerTrace, error) {
	v := url.Values{"service": {service}, "limit": {fmt.Sprint(jaegerQueryLimit)}}
	var traces []JaegerTrace
	if err := q.get(ctx, "/api/traces?"+v.Encode(), &traces); err != nil {
		return nil, err
	}
	return traces, nil
}

// Trace returns one trace by its hex ID, or an error wrapping ErrJaegerTraceNotFound.
func (q JaegerQuery) Trace(ctx context.Context, traceID string) (JaegerTrace, error) {
	var traces []JaegerTrace
	if err := q.get(ctx, "/api/traces/"+url.PathEscape(traceID), &traces); err != nil {
		return JaegerTrace{}, err
	}
	if len(traces) == 0 {
		return JaegerTrace{}, fmt.Errorf("%w: %s", ErrJaegerTraceNotFound, traceID)
	}
	return traces[0], nil
}

var jaegerHTTP = &http.Client{Timeout: 10 * time.Second}

// get fetches path and decodes the "data" member of Jaeger's response envelope into data.
func (q JaegerQuery) get(ctx context.Context, path string, data any) error {
	if q.URL == "" {
		return fmt.Errorf("stack: jaeger query URL is empty (set %s)", EnvJaegerQuery)
	}
	u := strings.TrimSuffix(q.URL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("stack: jaeger query: %w", err)
	}
	resp, err := jaegerHTTP.Do(req)
	if err != nil {
		return fmt.Errorf("stack: jaeger query: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("stack: jaeger query GET %s: read: %w", u, err)
	}
	var env struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("stack: jaeger query GET %s: HTTP %d, not a Jaeger API response: %s", u, resp.StatusCode, lastBytes(body, 500))
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w (GET %s)", ErrJaegerTraceNotFound, u)
	}
	if resp.StatusCode != http.StatusOK || len(env.Errors) > 0 {
		return fmt.Errorf("stack: jaeger query GET %s: HTTP %d: %+v", u, resp.StatusCode, env.Errors)
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return nil
	}
	if err := json.Unmarshal(env.Data, data); err != nil {
		return fmt.Errorf("stack: jaeger query GET %s: decode: %w", u, err)
	}
	if traces, ok := data.(*[]JaegerTrace); ok {
		for i := range *traces {
			(*traces)[i].normalizeIDs()
		}
	}
	return nil
}

// normalizeIDs pads trace IDs to 32 hex digits: Jaeger drops the high half when it is zero,
// while OTel's TraceID.String always prints 32 digits.
func (t *JaegerTrace) normalizeIDs() {
	t.TraceID = padTraceID(t.TraceID)
	for i := range t.Spans {
		s := &t.Spans[i]
		s.TraceID = padTraceID(s.TraceID)
		for k := range s.References {
			s.References[k].TraceID = padTraceID(s.References[k].TraceID)
		}
	}
}

func padTraceID(id string) string {
	if n := len(id); n > 0 && n < 32 {
		return strings.Repeat("0", 32-n) + id
	}
	return id
}

// freeUDPPorts reserves n distinct free UDP ports on 127.0.0.1 (Jaeger's agent listens on
// UDP; a free TCP port says nothing about UDP).
func freeUDPPorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var cs []net.PacketConn
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for range n {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("stack: reserve a free UDP port: %w", err)
		}
		cs = append(cs, c)
		ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
	}
	return ports, nil
}

func lastBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
