package registry

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/avrov2"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/jsonschema"
	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry/serde/protobuf"
	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/proto"

	"github.com/samsa-go/samsa/codec"
)

// SubjectStrategy says under which subject a codec registers and looks up its schema.
type SubjectStrategy int

const (
	// TopicName is "<topic>-value", or "<topic>-key" for a key codec: one schema (and its
	// versions) per topic. The default.
	TopicName SubjectStrategy = iota
	// RecordName is the record's fully qualified name (Avro record, Protobuf message,
	// JSON Schema title): one schema per type, whatever the topic.
	RecordName
	// TopicRecordName is "<topic>-<record name>": several types on one topic, each
	// with its own versions.
	TopicRecordName
)

func (s SubjectStrategy) String() string {
	switch s {
	case TopicName:
		return "TopicName"
	case RecordName:
		return "RecordName"
	case TopicRecordName:
		return "TopicRecordName"
	}
	return fmt.Sprintf("SubjectStrategy(%d)", int(s))
}

func (s SubjectStrategy) serde() (serde.SubjectNameStrategyType, error) {
	// Always explicit: confluent-kafka-go's zero value is an "associated name" strategy
	// that asks the registry's /associations endpoint first, which registries other
	// than Confluent's answer with 404 (and an empty body that fails to parse).
	switch s {
	case TopicName:
		return serde.TopicNameStrategyType, nil
	case RecordName:
		return serde.RecordNameStrategyType, nil
	case TopicRecordName:
		return serde.TopicRecordNameStrategyType, nil
	}
	return 0, fmt.Errorf("registry: unknown SubjectStrategy %d", int(s))
}

// Options configures a codec. The zero value encodes record values with the schema
// derived from T, registered under "<topic>-value" on first use.
type Options struct {
	// Key makes the codec one for record keys: with TopicName its subject is
	// "<topic>-key".
	Key bool
	// Subject is the subject-name strategy. Default: TopicName.
	Subject SubjectStrategy
	// SubjectName, when set, is the subject of the codec's schema whatever the topic and
	// Subject, e.g. an event name when each event type has its own subject.
	SubjectName string
	// UseLatest encodes with the subject's latest registered schema instead of the one
	// derived from T, and registers nothing: for services whose schemas are registered
	// ahead of time (a migration step). T's fields must match that schema's by name.
	// The latest version is read once per Client and kept: a running service picks up
	// a newer version when it builds a new Client (typically, when it restarts).
	UseLatest bool
	// NoAutoRegister makes the encoder look its schema up instead of registering it: a
	// schema not registered yet under the subject fails to encode.
	NoAutoRegister bool
	// Validate makes the JSON Schema codec validate values against the schema on encode
	// and on decode. Ignored by the other formats, whose encodings are the schema.
	Validate bool
}

// anySubject makes a deserializer fetch writer schemas by ID alone (GET /schemas/ids/
// {id}): IDs are global, and a record's subject need not be the one the topic implies
// (several event types on one topic, records copied between topics).
func anySubject(string, serde.Type, schemaregistry.SchemaInfo) (string, error) { return "", nil }

// fixSubject replaces the serializers' strategies by one naming o.SubjectName, when set.
func (o Options) fixSubject(strategies ...*serde.SubjectNameStrategyFunc) {
	if o.SubjectName == "" {
		return
	}
	subject := o.SubjectName
	for _, s := range strategies {
		*s = func(string, serde.Type, schemaregistry.SchemaInfo) (string, error) { return subject, nil }
	}
}

func (o Options) serdeType() serde.Type {
	if o.Key {
		return serde.KeySerde
	}
	return serde.ValueSerde
}

// Avro returns a codec for T in Confluent's Avro wire format (magic byte 0, the 4-byte
// schema ID, then the Avro binary encoding). T must be a struct type; its schema is
// derived from its fields (the `avro:"name"` tag names a field) unless UseLatest is set.
// topic is the topic the codec's records go to or come from; it names the subject.
//
// Decoding reads the writer's schema by the ID in the record and resolves it into T by
// field name, so records written with an older or newer version of a compatible schema
// decode.
func Avro[T any](c *Client, topic string, o Options) (codec.Codec[T], error) {
	typ := reflect.TypeFor[T]()
	if typ.Kind() != reflect.Struct {
		return nil, fmt.Errorf("registry: Avro[%s]: T must be a struct type, not a %s", typ, typ.Kind())
	}
	strategy, err := o.Subject.serde()
	if err != nil {
		return nil, err
	}
	sc := avrov2.NewSerializerConfig()
	sc.AutoRegisterSchemas = !o.NoAutoRegister && !o.UseLatest
	sc.UseLatestVersion = o.UseLatest
	sc.SubjectNameStrategyType = strategy
	ser, err := avrov2.NewSerializer(c.c, o.serdeType(), sc)
	if err != nil {
		return nil, fmt.Errorf("registry: Avro[%s] serializer: %w", typ, err)
	}
	dc := avrov2.NewDeserializerConfig()
	dc.SubjectNameStrategyType = strategy
	de, err := avrov2.NewDeserializer(c.c, o.serdeType(), dc)
	if err != nil {
		return nil, fmt.Errorf("registry: Avro[%s] deserializer: %w", typ, err)
	}
	o.fixSubject(&ser.SubjectNameStrategy)
	de.SubjectNameStrategy = anySubject
	fast := &fastPath[T]{client: c, plain: func(info schemaregistry.SchemaInfo) (func(*T) ([]byte, error), error) {
		schema, err := avro.ParseWithCache(info.Schema, "", &avro.SchemaCache{})
		if err != nil {
			return nil, err
		}
		return func(v *T) ([]byte, error) { return avroAPI.Marshal(schema, *v) }, nil
	}}
	return &serdeCodec[T]{name: "avro", typ: typ.String(), topic: topic, header: 5,
		ser: ser.Serialize, de: de.DeserializeInto, fast: fast}, nil
}

// JSONSchema returns a codec for T in Confluent's JSON Schema wire format (magic byte
// 0, the 4-byte schema ID, then the JSON text). T's schema is derived from its type
// (the `json` tags name fields) unless UseLatest is set. Options.Validate checks values
// against the schema on both sides.
func JSONSchema[T any](c *Client, topic string, o Options) (codec.Codec[T], error) {
	typ := reflect.TypeFor[T]()
	if typ.Kind() == reflect.Pointer {
		return nil, fmt.Errorf("registry: JSONSchema[%s]: T must not be a pointer type: use %s", typ, typ.Elem())
	}
	strategy, err := o.Subject.serde()
	if err != nil {
		return nil, err
	}
	sc := jsonschema.NewSerializerConfig()
	sc.AutoRegisterSchemas = !o.NoAutoRegister && !o.UseLatest
	sc.UseLatestVersion = o.UseLatest
	sc.SubjectNameStrategyType = strategy
	sc.EnableValidation = o.Validate
	ser, err := jsonschema.NewSerializer(c.c, o.serdeType(), sc)
	if err != nil {
		return nil, fmt.Errorf("registry: JSONSchema[%s] serializer: %w", typ, err)
	}
	dc := jsonschema.NewDeserializerConfig()
	dc.SubjectNameStrategyType = strategy
	dc.EnableValidation = o.Validate
	de, err := jsonschema.NewDeserializer(c.c, o.serdeType(), dc)
	if err != nil {
		return nil, fmt.Errorf("registry: JSONSchema[%s] deserializer: %w", typ, err)
	}
	o.fixSubject(&ser.SubjectNameStrategy)
	de.SubjectNameStrategy = anySubject
	var fast *fastPath[T]
	if !o.Validate { // validation needs the serializer
		fast = &fastPath[T]{client: c, plain: func(schemaregistry.SchemaInfo) (func(*T) ([]byte, error), error) {
			return func(v *T) ([]byte, error) { return json.Marshal(v) }, nil
		}}
	}
	return &serdeCodec[T]{name: "jsonschema", typ: typ.String(), topic: topic, header: 5,
		ser: ser.Serialize, de: de.DeserializeInto, fast: fast}, nil
}

// Protobuf returns a codec for the generated message type T (a pointer, such as
// *pb.Order) in Confluent's Protobuf wire format (magic byte 0, the 4-byte schema ID,
// the message indexes, then the Protobuf encoding). The schema is T's .proto file;
// the files it imports are registered as references.
func Protobuf[T proto.Message](c *Client, topic string, o Options) (codec.Codec[T], error) {
	typ := reflect.TypeFor[T]()
	if typ.Kind() != reflect.Pointer || typ.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("registry: Protobuf[%s]: T must be a generated message pointer type", typ)
	}
	strategy, err := o.Subject.serde()
	if err != nil {
		return nil, err
	}
	sc := protobuf.NewSerializerConfig()
	sc.AutoRegisterSchemas = !o.NoAutoRegister && !o.UseLatest
	sc.UseLatestVersion = o.UseLatest
	sc.SubjectNameStrategyType = strategy
	ser, err := protobuf.NewSerializer(c.c, o.serdeType(), sc)
	if err != nil {
		return nil, fmt.Errorf("registry: Protobuf[%s] serializer: %w", typ, err)
	}
	dc := protobuf.NewDeserializerConfig()
	dc.SubjectNameStrategyType = strategy
	de, err := protobuf.NewDeserializer(c.c, o.serdeType(), dc)
	if err != nil {
		return nil, fmt.Errorf("registry: Protobuf[%s] deserializer: %w", typ, err)
	}
	o.fixSubject(&ser.SubjectNameStrategy)
	de.SubjectNameStrategy = anySubject
	elem := typ.Elem()
	fast := &fastPath[T]{client: c, plain: func(schemaregistry.SchemaInfo) (func(*T) ([]byte, error), error) {
		return func(v *T) ([]byte, error) { return proto.Marshal(*v) }, nil
	}}
	return &protoCodec[T]{serdeCodec[T]{name: "protobuf", typ: typ.String(), topic: topic, header: 6,
		ser: ser.Serialize, de: de.DeserializeInto, fast: fast}, elem}, nil
}

// serdeCodec adapts a confluent-kafka-go serializer and deserializer to codec.Codec.
type serdeCodec[T any] struct {
	name   string // wire format, for errors
	typ    string // T's name, for errors
	topic  string
	header int // smallest valid payload: magic byte, schema ID, and for Protobuf an index
	ser    func(topic string, msg any) ([]byte, error)
	de     func(topic string, payload []byte, msg any) error
	fast   *fastPath[T] // nil: every encode goes through the serializer
}

func (c *serdeCodec[T]) Encode(v T) ([]byte, error) {
	if b, ok := c.fast.encode(&v); ok {
		return b, nil
	}
	b, err := c.ser(c.topic, &v)
	if err != nil {
		return nil, &codec.EncodeError{Codec: c.name, Err: wrapErr("encode "+c.typ+" for topic "+c.topic, err)}
	}
	c.fast.learn(b, &v)
	return b, nil
}

func (c *serdeCodec[T]) Decode(data []byte) (T, error) {
	var v T
	if err := c.check(data); err != nil {
		return v, err
	}
	if err := c.de(c.topic, data, &v); err != nil {
		var zero T
		return zero, c.decodeErr(data, err)
	}
	return v, nil
}

// check rejects what is not in the registry's framing before the deserializer sees it
// (it would index past a short payload), with a message that says what is wrong.
func (c *serdeCodec[T]) check(data []byte) error {
	if len(data) == 0 {
		return &codec.DecodeError{Codec: c.name, Err: errors.New("decode into " + c.typ + ": empty input")}
	}
	if data[0] != serde.MagicByte {
		return &codec.DecodeError{Codec: c.name, Err: fmt.Errorf("decode into %s: wrong magic byte 0x%02x (want 0x00): not written by a schema-registry serializer", c.typ, data[0])}
	}
	if len(data) < c.header {
		return &codec.DecodeError{Codec: c.name, Err: fmt.Errorf("decode into %s: %d bytes is shorter than the schema-registry header (%d)", c.typ, len(data), c.header)}
	}
	return nil
}

func (c *serdeCodec[T]) decodeErr(data []byte, err error) error {
	id := binary.BigEndian.Uint32(data[1:5])
	return &codec.DecodeError{Codec: c.name, Err: wrapErr(fmt.Sprintf("decode into %s (schema ID %d)", c.typ, id), err)}
}

// protoCodec allocates the message Decode fills: a Protobuf T is a pointer.
type protoCodec[T proto.Message] struct {
	serdeCodec[T]
	elem reflect.Type
}

func (c *protoCodec[T]) Encode(v T) ([]byte, error) {
	if reflect.ValueOf(v).IsNil() {
		return nil, &codec.EncodeError{Codec: c.name, Err: fmt.Errorf("encode nil %s for topic %s", c.typ, c.topic)}
	}
	if b, ok := c.fast.encode(&v); ok {
		return b, nil
	}
	b, err := c.ser(c.topic, v)
	if err != nil {
		return nil, &codec.EncodeError{Codec: c.name, Err: wrapErr("encode "+c.typ+" for topic "+c.topic, err)}
	}
	c.fast.learn(b, &v)
	return b, nil
}

func (c *protoCodec[T]) Decode(data []byte) (T, error) {
	var zero T
	if err := c.check(data); err != nil {
		return zero, err
	}
	v := reflect.New(c.elem).Interface().(T)
	if err := c.de(c.topic, data, v); err != nil {
		return zero, c.decodeErr(data, err)
	}
	return v, nil
}

// avroAPI is the configuration the Avro serializer marshals with.
var avroAPI = avro.Config{}.Freeze()

// fastPath skips the serializer once its output for T is known: the serializers derive
// T's schema again on every call (reflection, then the schema's canonical text for the
// cache lookup), which costs several times the encoding itself. After the first
// successful encode, the framing it wrote (magic byte, schema ID, Protobuf message
// indexes) is kept and later values are written as framing + the format's own encoding
// with the same schema, which is what the serializer writes. Schemas with references
// or data-contract rules (which transform values) always go through the serializer.
type fastPath[T any] struct {
	client *Client
	// plain returns the format's encoding of T under the registered schema info.
	plain func(info schemaregistry.SchemaInfo) (func(*T) ([]byte, error), error)

	mu       sync.Mutex
	attempts int
	ready    atomic.Pointer[fastEncoder[T]]
}

type fastEncoder[T any] struct {
	prefix []byte
	plain  func(*T) ([]byte, error)
}

// maxLearnAttempts bounds how often learn tries before leaving every encode to the
// serializer (an output it cannot reproduce, such as map order in Protobuf).
const maxLearnAttempts = 3

func (f *fastPath[T]) encode(v *T) ([]byte, bool) {
	if f == nil {
		return nil, false
	}
	e := f.ready.Load()
	if e == nil {
		return nil, false
	}
	body, err := e.plain(v)
	if err != nil {
		return nil, false // the serializer reports it, in its words
	}
	out := make([]byte, len(e.prefix)+len(body))
	copy(out, e.prefix)
	copy(out[len(e.prefix):], body)
	return out, true
}

// learn derives the framing from the serializer's output b for v.
func (f *fastPath[T]) learn(b []byte, v *T) {
	if f == nil || f.ready.Load() != nil || len(b) < 5 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ready.Load() != nil || f.attempts >= maxLearnAttempts {
		return
	}
	f.attempts++
	info, err := f.client.c.GetBySubjectAndID("", int(binary.BigEndian.Uint32(b[1:5]))) // cached
	if err != nil || info.RuleSet != nil || len(info.References) > 0 {
		f.attempts = maxLearnAttempts
		return
	}
	plain, err := f.plain(info)
	if err != nil {
		f.attempts = maxLearnAttempts
		return
	}
	body, err := plain(v)
	if err != nil || len(body)+5 > len(b) || !bytes.Equal(b[len(b)-len(body):], body) {
		return
	}
	f.ready.Store(&fastEncoder[T]{prefix: bytes.Clone(b[:len(b)-len(body)]), plain: plain})
}
