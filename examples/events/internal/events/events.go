// Package events is KaufmannEx's model on samsa: events with a meta envelope on one
// topic, Avro-encoded against a schema registry, each event name with its own subject
// (the event name) and its own typed handler; a failing handler answers with an error
// event "event.error.<name>" carrying the original event and the error.
//
// On the wire an event is a registry-framed Avro record whose full name is the event
// name and whose fields are "meta" (the [Meta] record) and "payload" (the event's own
// record). The service reads the writer's schema by the ID in the record (cached after
// the first time) to learn the event's name, then decodes it into the handler's type.
package events

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/processor"
)

// Meta is every event's envelope.
type Meta struct {
	Name          string    `avro:"name"`           // the event name, e.g. "order.placed"
	ID            string    `avro:"id"`             // unique per event
	EmittedAt     time.Time `avro:"emitted_at"`     // when the event was emitted, to the millisecond
	CorrelationID string    `avro:"correlation_id"` // the ID of the event this one answers or continues; "" if none
}

// Event is a decoded event of payload type T.
type Event[T any] struct {
	Meta    Meta
	Payload T
}

// envelope is an event as Avro encodes it.
type envelope[T any] struct {
	Meta    wireMeta `avro:"meta"`
	Payload T        `avro:"payload"`
}

// wireMeta is Meta as Avro encodes it. emitted_at is a plain long of Unix milliseconds,
// without Avro's timestamp-millis logical type: rivven-schema 0.0.22's compatibility check
// refuses a timestamp-millis field against itself ("Incompatible types:
// writer=TimestampMillis, reader=TimestampMillis"), which would make every schema change
// incompatible there.
type wireMeta struct {
	Name          string `avro:"name"`
	ID            string `avro:"id"`
	EmittedAt     int64  `avro:"emitted_at"`
	CorrelationID string `avro:"correlation_id"`
}

func (m Meta) wire() wireMeta {
	return wireMeta{Name: m.Name, ID: m.ID, EmittedAt: m.EmittedAt.UnixMilli(), CorrelationID: m.CorrelationID}
}

func (m wireMeta) meta() Meta {
	return Meta{Name: m.Name, ID: m.ID, EmittedAt: time.UnixMilli(m.EmittedAt).UTC(), CorrelationID: m.CorrelationID}
}

func fromWire[T any](e envelope[T]) Event[T] {
	return Event[T]{Meta: e.Meta.meta(), Payload: e.Payload}
}

// ErrorPayload is the payload of an "event.error.<name>" event.
type ErrorPayload struct {
	Error string `avro:"error"` // what the handler returned
	// Original is the failed event exactly as it was on the wire (registry framing
	// included), so it can be decoded, inspected and replayed.
	Original []byte `avro:"original"`
}

// ErrorPrefix starts the name of every error event.
const ErrorPrefix = "event.error."

// ErrorSchema is the Avro schema of the error event for event name: a record named
// "event.error.<name>" with the meta envelope and an ErrorPayload.
func ErrorSchema(name string) string {
	return `{"type":"record","name":"` + ErrorPrefix + name + `","fields":[` +
		`{"name":"meta","type":` + MetaSchema + `},` +
		`{"name":"payload","type":{"type":"record","name":"samsa.events.ErrorPayload","fields":[` +
		`{"name":"error","type":"string"},{"name":"original","type":"bytes"}]}}]}`
}

// MetaSchema is the Avro schema of Meta, which every event schema embeds as its "meta"
// field.
const MetaSchema = `{"type":"record","name":"samsa.events.Meta","fields":[` +
	`{"name":"name","type":"string"},{"name":"id","type":"string"},` +
	`{"name":"emitted_at","type":"long"},` +
	`{"name":"correlation_id","type":"string","default":""}]}`

// Service routes the events of one topic to handlers by name.
type Service struct {
	client *registry.Client
	topic  string
	log    *slog.Logger

	routes         map[string]*route
	out            processor.Output[string, []byte] // error events, already encoded
	allErrorEvents bool

	names sync.Map // schema ID → event name (the schema's full record name)
}

// route is one event name's handler.
type route struct {
	name        string
	decode      func([]byte) (any, Meta, error)
	handle      func(context.Context, Meta, any) error
	errorEvents bool
	errCodec    codec.Codec[envelope[ErrorPayload]]
}

// ServiceOption configures a Service.
type ServiceOption func(*Service)

// AllErrorEvents makes every handler emit error events, as [WithErrorEvents] does for
// one (KaufmannEx's default).
func AllErrorEvents() ServiceOption { return func(s *Service) { s.allErrorEvents = true } }

// NewService routes the events of topic. Handlers are added with [Handle].
func NewService(client *registry.Client, topic string, log *slog.Logger, opts ...ServiceOption) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{client: client, topic: topic, log: log, routes: map[string]*route{},
		out: processor.NewOutput[string, []byte](topic, codec.String(), codec.Bytes())}
	for _, o := range opts {
		o(s)
	}
	return s
}

// HandleOption configures one handler.
type HandleOption func(*route)

// WithErrorEvents makes a failing handler emit "event.error.<name>" (with the original
// event and the error) and go on, as KaufmannEx does, instead of failing the batch
// through the processor's error policy.
func WithErrorEvents() HandleOption { return func(r *route) { r.errorEvents = true } }

// Handle registers h for events named name, whose payload decodes into T by Avro field
// name (`avro` tags). The event's schema must be registered under the subject name
// (see Migrate). Handle must be called before the service runs.
func Handle[T any](s *Service, name string, h func(context.Context, Event[T]) error, opts ...HandleOption) error {
	if _, dup := s.routes[name]; dup {
		return fmt.Errorf("events: a handler for %q is already registered", name)
	}
	c, err := registry.Avro[envelope[T]](s.client, s.topic, registry.Options{SubjectName: name, UseLatest: true})
	if err != nil {
		return err
	}
	r := &route{
		name: name,
		decode: func(b []byte) (any, Meta, error) {
			e, err := c.Decode(b)
			return e.Payload, e.Meta.meta(), err
		},
		handle:      func(ctx context.Context, m Meta, p any) error { return h(ctx, Event[T]{Meta: m, Payload: p.(T)}) },
		errorEvents: s.allErrorEvents,
	}
	for _, o := range opts {
		o(r)
	}
	if r.errorEvents {
		if r.errCodec, err = registry.Avro[envelope[ErrorPayload]](s.client, s.topic,
			registry.Options{SubjectName: ErrorPrefix + name, UseLatest: true}); err != nil {
			return err
		}
	}
	s.routes[name] = r
	return nil
}

// RegisterErrorSchemas registers the error-event schema of every handler with error
// events, under the subject "event.error.<name>". It is idempotent.
func (s *Service) RegisterErrorSchemas() error {
	for name, r := range s.routes {
		if !r.errorEvents {
			continue
		}
		if _, err := s.client.Register(ErrorPrefix+name, registry.Schema{Type: "AVRO", Text: ErrorSchema(name)}); err != nil {
			return fmt.Errorf("events: register the error schema of %q: %w", name, err)
		}
	}
	return nil
}

// Incoming is a record of the topic, decoded as far as its handler needs.
type Incoming struct {
	Name    string
	Meta    Meta
	payload any
	raw     []byte
	route   *route // nil: no handler for this name
}

// Decoder decodes the topic's records for the processor. A record that is not an
// event (wrong framing, unknown schema ID, undecodable) is a decode failure, which the
// processor's error policy handles (a dead-letter topic keeps it with the reason); a
// registry outage matches codec.ErrUnavailable and is waited out.
func (s *Service) Decoder() codec.Decoder[Incoming] {
	return codec.DecoderFunc[Incoming](s.decode)
}

// Name returns the event name of a record of the topic: the full name of its writer's
// schema, looked up by the ID in the record (cached).
func (s *Service) Name(data []byte) (string, error) {
	if len(data) < 5 || data[0] != 0 {
		return "", &codec.DecodeError{Codec: "events", Err: fmt.Errorf("not a schema-registry framed event (%d bytes, first byte 0x%02x; want magic byte 0x00 and a 4-byte schema ID)", len(data), first(data))}
	}
	name, err := s.eventName(int(binary.BigEndian.Uint32(data[1:5])))
	if err != nil {
		return "", &codec.DecodeError{Codec: "events", Err: err}
	}
	return name, nil
}

func (s *Service) decode(data []byte) (Incoming, error) {
	name, err := s.Name(data)
	if err != nil {
		return Incoming{}, err
	}
	in := Incoming{Name: name, route: s.routes[name]}
	if in.route == nil {
		return in, nil // nobody handles it here: skipped, not decoded
	}
	if in.payload, in.Meta, err = in.route.decode(data); err != nil {
		return Incoming{}, err
	}
	in.raw = append([]byte(nil), data...) // an error event carries it; data is reused
	return in, nil
}

func first(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// eventName is the full record name of schema id, cached.
func (s *Service) eventName(id int) (string, error) {
	if n, ok := s.names.Load(id); ok {
		return n.(string), nil
	}
	sc, err := s.client.SchemaByID(id)
	if err != nil {
		return "", err
	}
	var rec struct {
		Type      string `json:"type"`
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	if err := json.Unmarshal([]byte(sc.Text), &rec); err != nil || rec.Type != "record" || rec.Name == "" {
		return "", fmt.Errorf("schema ID %d is not an Avro record schema, so not an event", id)
	}
	name := rec.Name
	if rec.Namespace != "" && !containsDot(name) {
		name = rec.Namespace + "." + name
	}
	s.names.Store(id, name)
	return name, nil
}

func containsDot(s string) bool {
	for i := range len(s) {
		if s[i] == '.' {
			return true
		}
	}
	return false
}

// Handler is the processor handler that dispatches a batch's events by name, in order.
func (s *Service) Handler() processor.HandlerFunc[string, Incoming] {
	return func(ctx context.Context, b *processor.Batch[string, Incoming]) error {
		for _, r := range b.Records {
			in := r.Value
			if r.Tombstone || in.route == nil {
				continue
			}
			err := in.route.call(ctx, in.Meta, in.payload)
			if err == nil {
				continue
			}
			if !in.route.errorEvents {
				return fmt.Errorf("event %s %s: %w", in.Name, in.Meta.ID, err)
			}
			s.log.Warn("events: handler failed, emitting error event", "event", in.Name, "id", in.Meta.ID, "err", err)
			if err := s.emitError(b, r.Key, in, err); err != nil {
				return err
			}
		}
		return nil
	}
}

// call runs the handler; with error events, a panic is the event's error like any other
// (without them the processor recovers it and applies its error policy).
func (r *route) call(ctx context.Context, m Meta, p any) (err error) {
	if r.errorEvents {
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("handler panicked: %v", v)
			}
		}()
	}
	return r.handle(ctx, m, p)
}

func (s *Service) emitError(b *processor.Batch[string, Incoming], key string, in Incoming, cause error) error {
	corr := in.Meta.CorrelationID
	if corr == "" {
		corr = in.Meta.ID
	}
	data, err := in.route.errCodec.Encode(envelope[ErrorPayload]{
		Meta:    Meta{Name: ErrorPrefix + in.Name, ID: NewID(), EmittedAt: time.Now(), CorrelationID: corr}.wire(),
		Payload: ErrorPayload{Error: cause.Error(), Original: in.raw},
	})
	if err != nil {
		return fmt.Errorf("events: encode the error event of %s %s: %w", in.Name, in.Meta.ID, err)
	}
	return s.out.Send(b, key, data)
}

// Encoder returns the encoder of events named name with payload T, for producers. The
// schema must be registered under the subject name (see Migrate).
func Encoder[T any](client *registry.Client, topic, name string) (codec.Encoder[Event[T]], error) {
	c, err := registry.Avro[envelope[T]](client, topic, registry.Options{SubjectName: name, UseLatest: true})
	if err != nil {
		return nil, err
	}
	return codec.EncoderFunc[Event[T]](func(e Event[T]) ([]byte, error) {
		if e.Meta.Name == "" {
			e.Meta.Name = name
		}
		if e.Meta.Name != name {
			return nil, fmt.Errorf("events: encoder of %q given an event named %q", name, e.Meta.Name)
		}
		if e.Meta.ID == "" {
			e.Meta.ID = NewID()
		}
		if e.Meta.EmittedAt.IsZero() {
			e.Meta.EmittedAt = time.Now().UTC()
		}
		return c.Encode(envelope[T]{Meta: e.Meta.wire(), Payload: e.Payload})
	}), nil
}

// DecodeError decodes an error event's payload with the same registry.
func DecodeError(client *registry.Client, topic string, data []byte) (Event[ErrorPayload], error) {
	c, err := registry.Avro[envelope[ErrorPayload]](client, topic, registry.Options{})
	if err != nil {
		return Event[ErrorPayload]{}, err
	}
	e, err := c.Decode(data)
	return fromWire(e), err
}

// Decode decodes an event of payload T from its wire bytes.
func Decode[T any](client *registry.Client, topic string, data []byte) (Event[T], error) {
	c, err := registry.Avro[envelope[T]](client, topic, registry.Options{})
	if err != nil {
		return Event[T]{}, err
	}
	e, err := c.Decode(data)
	return fromWire(e), err
}

// NewID returns a random 128-bit event ID in hex.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(errors.New("events: no randomness: " + err.Error()))
	}
	return hex.EncodeToString(b[:])
}
