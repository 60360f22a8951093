package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// jaegerVersion must match the require in integration/tools/jaeger/go.mod: it names the
// cache directory, so bumping one without the other would keep using the old binary.
const jaegerVersion = "v1.55.0"

// jaegerQueryLimit is the number of traces per Traces call; the memory store returns the newest.
const jaegerQueryLimit = 1000

// ErrJaegerTraceNotFound is returned by Trace while Jaeger does not (yet) have the trace.
var ErrJaegerTraceNotFound = errors.New("stack: jaeger: trace not found")

// JaegerBinary returns the path of the Jaeger all-in-one binary, building it from the Go
// module proxy into CacheDir()/jaeger-<version> on first use (a few minutes). Concurrent
// callers, including other test binaries, wait for one build.
func JaegerBinary(ctx context.Context) (string, error) {
	return cached("jaeger", "jaeger-"+jaegerVersion, "jaeger-all-in-one", func(dst string) error {
		modDir, err := toolsPath("jaeger", "go.mod")
		if err != nil {
			return err
		}
		gobin, err := exec.LookPath("go")
		if err != nil {
			return fmt.Errorf("stack: building Jaeger %s needs the go command in PATH (or set %s and %s to a running Jaeger): %w",
				jaegerVersion, EnvOTLPEndpoint, EnvJaegerQuery, err)
		}
		cmd := exec.CommandContext(ctx, gobin, "build", "-o", filepath.Join(dst, "jaeger-all-in-one"),
			"github.com/jaegertracing/jaeger/cmd/all-in-one")
		cmd.Dir = filepath.Dir(modDir)
		// GOWORK=off: the tools module must build alone even if a go.work includes the repo.
		// CGO_ENABLED=0: no C toolchain needed, and a static binary.
		cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("stack: build Jaeger %s (go build in %s): %w\n%s",
				jaegerVersion, cmd.Dir, err, lastBytes(out, 4000))
		}
		return nil
	})
}

// JaegerOptions configures StartJaeger. It has no fields yet.
type JaegerOptions struct{}

// Jaeger is a Jaeger all-in-one child process with in-memory storage, every port of which
// is a free port on 127.0.0.1, so several can run at once. Close kills it (there is
// nothing to flush) and removes its log.
type Jaeger struct {
	JaegerQuery // query helpers, on QueryURL
	server

	otlpHTTP, otlpGRPC string
}

// StartJaeger builds Jaeger if needed (see JaegerBinary), starts it and waits until its
// query API answers and its OTLP receivers listen.
func StartJaeger(ctx context.Context, opts JaegerOptions) (*Jaeger, error) {
	bin, err := JaegerBinary(ctx)
	if err != nil {
		return nil, err
	}
	j := &Jaeger{}
	j.server, err = startServer(ctx, "jaeger", "jaeger", func(logPath string) (*process, error) {
		tcp, err := freePorts(8)
		if err != nil {
			return nil, err
		}
		j.otlpGRPC, j.otlpHTTP, j.URL = hostPort(tcp[0]), hostPort(tcp[1]), "http://"+hostPort(tcp[2])
		p := &process{name: "jaeger-all-in-one", logPath: logPath}
		return p, p.start([]string{
			"SPAN_STORAGE_TYPE=memory",
			// Jaeger's own tracer exports to OTLP localhost:4317 by default, which may be
			// another developer's Jaeger: sample nothing, and point it at this instance anyway.
			"OTEL_TRACES_SAMPLER=always_off",
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + j.otlpGRPC,
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://" + j.otlpGRPC,
		}, bin,
			"--log-level=warn",
			"--collector.otlp.enabled=true",
			"--collector.otlp.grpc.host-port="+j.otlpGRPC,
			"--collector.otlp.http.host-port="+j.otlpHTTP,
			"--query.http-server.host-port="+hostPort(tcp[2]),
			"--query.grpc-server.host-port="+hostPort(tcp[3]),
			"--collector.grpc-server.host-port="+hostPort(tcp[4]), // the embedded agent reports here
			"--collector.http-server.host-port="+hostPort(tcp[5]),
			"--admin.http.host-port="+hostPort(tcp[6]),
			"--http-server.host-port="+hostPort(tcp[7]), // agent sampling/config server
			// The embedded agent's UDP servers, unused here: on ports the kernel picks.
			"--processor.jaeger-compact.server-host-port=127.0.0.1:0",
			"--processor.jaeger-binary.server-host-port=127.0.0.1:0",
			"--processor.zipkin-compact.server-host-port=127.0.0.1:0",
			// The Zipkin collector (--collector.zipkin.host-port) is off by default: no port.
		)
	}, func(ctx context.Context, p *process) error {
		// Ready: the query API answers, and the OTLP ports listen (normally already: the
		// collector starts before the query service).
		return poll(ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
			_, err := j.Services(ctx)
			for _, addr := range []string{j.otlpHTTP, j.otlpGRPC} {
				if err == nil {
					err = dialable(addr)(ctx)
				}
			}
			return err
		}, p)
	}, (*process).kill)
	if err != nil {
		return nil, err
	}
	return j, nil
}

// OTLPHTTPEndpoint is the OTLP/HTTP receiver's "127.0.0.1:port", for
// otlptracehttp.WithEndpoint together with otlptracehttp.WithInsecure.
func (j *Jaeger) OTLPHTTPEndpoint() string { return j.otlpHTTP }

// OTLPGRPCEndpoint is the OTLP/gRPC receiver's "127.0.0.1:port".
func (j *Jaeger) OTLPGRPCEndpoint() string { return j.otlpGRPC }

// QueryURL is the query API and UI base URL, "http://127.0.0.1:port".
func (j *Jaeger) QueryURL() string { return j.URL }

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
	var resp *http.Response
	if err == nil {
		resp, err = jaegerHTTP.Do(req)
	}
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		return fmt.Errorf("stack: jaeger query GET %s: %w", u, err)
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
