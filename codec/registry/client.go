package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/rest"

	"github.com/samsa-go/samsa/codec"
)

// Config configures a [Client]. The zero value of each optional field means its default.
type Config struct {
	// URL is the registry's base URL, e.g. "http://127.0.0.1:8081". Several URLs separated
	// by commas are tried in order. "mock://name" is an in-memory registry private to the
	// Client, for unit tests. Required.
	URL string
	// Username and Password enable HTTP basic authentication. Both or neither.
	Username, Password string
	// TLS is used for https URLs: root CAs, client certificates, server name. Default:
	// Go's defaults (the system roots).
	TLS *tls.Config
	// RequestTimeout bounds one HTTP request. Default: 10s.
	RequestTimeout time.Duration
	// Retries is how many times a request that got no answer, or a 401, 403, 408, 429 or
	// 5xx answer, is retried before the call fails. Negative: never. Default: 2.
	Retries int
	// RetryWait is the first retry's upper bound; later ones double it (full jitter),
	// up to 2s. Default: 100ms.
	RetryWait time.Duration
	// CacheCapacity bounds each of the client's schema caches (schema → ID and ID →
	// schema, per subject). Default: 0, unbounded: a service sees few schemas.
	CacheCapacity int
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("registry: Config.URL is empty"))
	}
	for _, u := range strings.Split(c.URL, ",") {
		if u == "" || strings.HasPrefix(u, "mock://") {
			continue
		}
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, fmt.Errorf("registry: Config.URL %q is not an http(s) URL with a host", redactUserInfo(u)))
		}
	}
	if (c.Username == "") != (c.Password == "") {
		errs = append(errs, errors.New("registry: Config.Username and Config.Password go together: set both or neither"))
	}
	if c.RequestTimeout < 0 || c.RetryWait < 0 {
		errs = append(errs, errors.New("registry: Config durations must not be negative"))
	}
	if c.CacheCapacity < 0 {
		errs = append(errs, fmt.Errorf("registry: Config.CacheCapacity %d is negative", c.CacheCapacity))
	}
	return errors.Join(errs...)
}

// Client talks to a Confluent-API schema registry and caches what it learns: a schema's
// ID once registered or looked up, and the schema of an ID once fetched. Codecs built on
// one Client share its caches. A Client is safe for concurrent use.
type Client struct {
	c schemaregistry.Client
}

// NewClient checks cfg and builds a client. It does not contact the registry.
func NewClient(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	} else if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.RetryWait == 0 {
		cfg.RetryWait = 100 * time.Millisecond
	}
	var conf *schemaregistry.Config
	if cfg.Username != "" {
		conf = schemaregistry.NewConfigWithBasicAuthentication(cfg.URL, cfg.Username, cfg.Password)
	} else {
		conf = schemaregistry.NewConfig(cfg.URL)
	}
	conf.RequestTimeoutMs = int(cfg.RequestTimeout.Milliseconds())
	conf.ConnectionTimeoutMs = conf.RequestTimeoutMs
	conf.MaxRetries = cfg.Retries
	conf.RetriesWaitMs = max(1, int(cfg.RetryWait.Milliseconds()))
	conf.RetriesMaxWaitMs = max(conf.RetriesWaitMs, 2000)
	conf.CacheCapacity = cfg.CacheCapacity
	base := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.TLS != nil {
		base.TLSClientConfig = cfg.TLS.Clone()
	}
	// The timeout is the transport's, not http.Client.Timeout: the client replaces the
	// error of a request it timed out by one of its own, losing the classification.
	conf.HTTPClient = &http.Client{Transport: classifying{rt: base, timeout: cfg.RequestTimeout}}
	c, err := schemaregistry.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Client{c: c}, nil
}

// Close releases the client's connections. It is idempotent.
func (c *Client) Close() error { return c.c.Close() }

// classifying marks every failure to get an answer, every answer that says "try later"
// (408, 429, 5xx) and refused credentials (401, 403) as unavailability. The registry client retries both the same
// way; what it finally returns then matches codec.ErrUnavailable, which the processor
// treats as a reason to wait and retry rather than as a bad record.
type classifying struct {
	rt      http.RoundTripper
	timeout time.Duration // of one request, body included
}

func (t classifying) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, &unavailableError{err: err}
	}
	switch s := resp.StatusCode; {
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500,
		// Refused credentials are no record's fault either: waiting (and logging) until
		// they are fixed loses nothing, dead-lettering every record would.
		s == http.StatusUnauthorized, s == http.StatusForbidden:
		resp.Body.Close()
		cancel()
		return nil, &unavailableError{status: resp.Status}
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// cancelOnClose ends a request's timeout context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// unavailableError is a registry that did not answer, or answered "try later".
type unavailableError struct {
	err    error  // transport failure, or
	status string // the HTTP status it answered
}

func (e *unavailableError) Error() string {
	if e.err != nil {
		return "schema registry unreachable: " + e.err.Error()
	}
	return "schema registry answered HTTP " + e.status
}

func (e *unavailableError) Unwrap() []error {
	if e.err != nil {
		return []error{codec.ErrUnavailable, e.err}
	}
	return []error{codec.ErrUnavailable}
}

// wrapErr turns what the registry client returned into an error that says which call
// failed. Unavailability keeps matching codec.ErrUnavailable.
func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	var ue *unavailableError
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", what, ue)
	}
	var re *rest.Error
	if errors.As(err, &re) {
		return fmt.Errorf("%s: %w", what, &Error{Code: re.Code, Message: re.Message})
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Error is an error answer of the registry: Code is its error code (40401 subject not
// found, 40403 schema not found, 409 incompatible schema, 42201 invalid schema, ...).
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("schema registry error %d: %s", e.Code, e.Message)
}

// NotFound reports whether the registry said the subject, version or schema does not
// exist.
func (e *Error) NotFound() bool { return e.Code == 404 || (e.Code >= 40400 && e.Code < 40500) }

// IncompatibleError is a schema the registry refused under the subject's compatibility
// rule.
type IncompatibleError struct {
	Subject       string
	Compatibility string // BACKWARD, FORWARD, FULL, ..._TRANSITIVE or NONE
	Detail        string // the registry's explanation, when it gave one
}

func (e *IncompatibleError) Error() string {
	msg := fmt.Sprintf("schema for subject %q is incompatible with its registered versions under compatibility %s", e.Subject, e.Compatibility)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Schema is a schema as the registry stores it.
type Schema struct {
	Type string // AVRO, PROTOBUF or JSON; "" means AVRO
	Text string // the schema's text: Avro JSON, .proto source or JSON Schema
}

func (s Schema) info() schemaregistry.SchemaInfo {
	t := s.Type
	if t == "AVRO" {
		t = "" // the registry's default; some registries reject it spelled out
	}
	return schemaregistry.SchemaInfo{Schema: s.Text, SchemaType: t}
}

// Register registers s under subject (a no-op returning the existing ID when it is
// there already) and returns its ID. A schema the subject's compatibility rule refuses
// is an [*IncompatibleError].
func (c *Client) Register(subject string, s Schema) (int, error) {
	id, err := c.c.Register(subject, s.info(), false)
	if err == nil {
		return id, nil
	}
	var re *rest.Error
	if errors.As(err, &re) && re.Code == http.StatusConflict {
		level, lerr := c.Compatibility(subject)
		if lerr != nil {
			level = "(unknown: " + lerr.Error() + ")"
		}
		return 0, &IncompatibleError{Subject: subject, Compatibility: level, Detail: re.Message}
	}
	return 0, wrapErr("registry: register subject "+subject, err)
}

// Check tests s against subject's registered versions under the subject's compatibility
// rule without registering it. It returns nil when s is compatible or the subject has no
// versions yet, and an [*IncompatibleError] when it is not.
func (c *Client) Check(subject string, s Schema) error {
	level, err := c.Compatibility(subject)
	if err != nil {
		return err
	}
	ok, err := c.c.TestSubjectCompatibility(subject, s.info())
	var re *rest.Error
	switch {
	case err == nil:
	case errors.As(err, &re) && re.Code == 40401:
		return nil // no versions to be incompatible with
	case errors.Is(err, codec.ErrUnavailable) || errors.As(err, &re):
		return wrapErr("registry: check compatibility of subject "+subject, err)
	default:
		// Registries without the all-versions endpoint (POST /compatibility/subjects/
		// {subject}/versions) answer 404 with an empty body: test version by version as
		// the rule says, the latest one or, for a transitive rule, every one.
		if ok, err = c.checkVersions(subject, level, s); err != nil {
			return err
		}
	}
	if ok {
		return nil
	}
	return &IncompatibleError{Subject: subject, Compatibility: level}
}

func (c *Client) checkVersions(subject, level string, s Schema) (bool, error) {
	versions, err := c.c.GetAllVersions(subject)
	var re *rest.Error
	if errors.As(err, &re) && re.Code == 40401 {
		return true, nil
	} else if err != nil {
		return false, wrapErr("registry: versions of subject "+subject, err)
	}
	if !strings.HasSuffix(level, "_TRANSITIVE") && len(versions) > 1 {
		versions = versions[len(versions)-1:]
	}
	for _, v := range versions {
		ok, err := c.c.TestCompatibility(subject, v, s.info())
		if err != nil {
			return false, wrapErr(fmt.Sprintf("registry: check compatibility of subject %s with version %d", subject, v), err)
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// Compatibility returns subject's compatibility rule, or the registry's default when the
// subject has none of its own.
func (c *Client) Compatibility(subject string) (string, error) {
	level, err := c.c.GetCompatibility(subject)
	if err == nil {
		return level.String(), nil
	}
	var re *rest.Error
	if !errors.As(err, &re) || !(re.Code == 404 || (re.Code >= 40400 && re.Code < 40500)) {
		return "", wrapErr("registry: compatibility of subject "+subject, err)
	}
	level, err = c.c.GetDefaultCompatibility()
	if err != nil {
		return "", wrapErr("registry: default compatibility", err)
	}
	return level.String(), nil
}

// SetCompatibility sets subject's compatibility rule: BACKWARD, BACKWARD_TRANSITIVE,
// FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE.
func (c *Client) SetCompatibility(subject, level string) error {
	var l schemaregistry.Compatibility
	if err := l.ParseString(level); err != nil || level == "" {
		return fmt.Errorf("registry: unknown compatibility %q: want BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE", level)
	}
	_, err := c.c.UpdateCompatibility(subject, l)
	return wrapErr("registry: set compatibility of subject "+subject, err)
}

// SchemaByID returns the schema with the given ID, from the cache once fetched.
func (c *Client) SchemaByID(id int) (Schema, error) {
	info, err := c.c.GetBySubjectAndID("", id)
	if err != nil {
		return Schema{}, wrapErr(fmt.Sprintf("registry: schema ID %d", id), err)
	}
	t := info.SchemaType
	if t == "" {
		t = "AVRO"
	}
	return Schema{Type: t, Text: info.Schema}, nil
}

// Latest returns the ID and schema of subject's latest version, as the registry has it
// now (codecs with UseLatest keep the version they first read).
func (c *Client) Latest(subject string) (int, Schema, error) {
	versions, err := c.c.GetAllVersions(subject)
	if err == nil && len(versions) == 0 {
		err = &rest.Error{Code: 40401, Message: "subject has no versions"}
	}
	if err != nil {
		return 0, Schema{}, wrapErr("registry: latest schema of subject "+subject, err)
	}
	m, err := c.c.GetSchemaMetadata(subject, versions[len(versions)-1])
	if err != nil {
		return 0, Schema{}, wrapErr("registry: latest schema of subject "+subject, err)
	}
	t := m.SchemaType
	if t == "" {
		t = "AVRO"
	}
	return m.ID, Schema{Type: t, Text: m.Schema}, nil
}

// redactUserInfo hides a password written into a URL's user info (scheme://user:pw@host)
// before the URL goes into an error message, even when the URL does not parse.
func redactUserInfo(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		scheme, rest = "", u
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return u
	}
	if slash := strings.IndexAny(rest, "/?#"); slash >= 0 && slash < at {
		return u // the @ is in the path or query, not in the authority
	}
	user, _, hasPw := strings.Cut(rest[:at], ":")
	if !hasPw {
		return u
	}
	if scheme != "" {
		scheme += "://"
	}
	return scheme + user + ":***" + rest[at:]
}
