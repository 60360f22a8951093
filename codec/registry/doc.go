// Package registry provides codecs that write and read records in a schema registry's
// wire format — Avro, Protobuf and JSON Schema — over confluent-kafka-go's serdes, with
// samsa's own types at the surface.
//
// # Subjects and topics
//
// A codec is built for one topic, because the registry files schemas under subjects and
// the default subject-name strategy, [TopicName], derives the subject from the topic:
// "<topic>-value" ("<topic>-key" with Options.Key). The strategy is always set
// explicitly: confluent-kafka-go v2.15's own default asks the registry's /associations
// endpoint first, which registries other than Confluent's do not have. [RecordName] and
// [TopicRecordName] file schemas by record type instead.
//
// # Wire format
//
// Every record starts with magic byte 0 and the 4-byte big-endian schema ID (Protobuf
// adds the message indexes), then the encoding proper. The encoder registers its
// schema on first use (or looks it up, or takes the subject's latest version; see
// [Options]) and keeps the ID; the decoder fetches a writer's schema by its ID alone
// the first time it sees that ID, whatever subject it was registered under, and
// resolves it into T. Both are cached by the [Client] for its lifetime, so a running
// service needs the registry only for schemas it has not seen yet.
//
// After its first record an encoder writes the framing it learned followed by the
// format's own encoding, instead of calling confluent-kafka-go's serializer again,
// which derives T's schema by reflection on every call; the bytes are the same.
// Schemas with references or data-contract rules, and validating JSON Schema codecs,
// always go through the serializer.
//
// # Errors
//
// Decoding a record that does not start with the magic byte, is too short, or names a
// schema ID the registry does not know returns a [*codec.DecodeError]: the record is
// bad, and the processor's error policy applies (a dead-letter topic keeps it with the
// reason). A registry that does not answer (a TLS handshake that fails included),
// answers 408, 429 or 5xx, or refuses the credentials (401, 403) makes the codec's
// error match [codec.ErrUnavailable] instead: the processor then waits and
// retries the batch rather than treating good records as bad. Schemas the subject's
// compatibility rule refuses are an [*IncompatibleError] naming the subject and the
// rule. Error messages carry no payload bytes from this package; the underlying
// decoders' messages name types and fields.
//
// # Concurrency
//
// A [Client] and the codecs built on it are safe for concurrent use.
//
// # Lifecycle
//
// Build one [Client] per registry and close it when the codecs built on it are no longer
// used. Building a client or a codec does not contact the registry.
package registry
