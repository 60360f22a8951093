// Package codec provides typed serialization at the edges of the framework.
// The core moves bytes; users see typed keys and values.
//
// # Encoders, decoders and codecs
//
// An [Encoder] turns a value into bytes and a [Decoder] turns bytes back into
// a value; a [Codec] is both. Producer paths need only an Encoder, so custom
// serialization for them can be a single function wrapped in [EncoderFunc]
// ([DecoderFunc] is the mirror image); [Func] builds a full Codec from two
// functions.
//
// # Built-in codecs and wire formats
//
//   - [String]: the UTF-8 bytes as-is, unvalidated, like Kafka's
//     StringSerializer.
//   - [Bytes]: identity. Decode returns a copy.
//   - [Int64]: 8 bytes, big-endian two's complement. Compatible with Kafka's
//     Java LongSerializer/LongDeserializer (Serdes.Long()).
//   - [Int32]: 4 bytes, big-endian two's complement. Compatible with Kafka's
//     Java IntegerSerializer/IntegerDeserializer (Serdes.Integer()).
//   - [JSON]: encoding/json.
//
// [Int64] and [Int32] reject input of any other length rather than guessing.
//
// Package codec/registry adds Avro, Protobuf and JSON Schema codecs in a schema
// registry's wire format.
//
// # Tombstones
//
// Kafka distinguishes a nil value (a tombstone, typically a delete on a
// compacted topic) from an empty one. The framework never calls a value
// decoder for a nil value: the record states explicitly that it is a
// tombstone. A value decoder therefore sees only non-nil data, which may be
// empty, and an empty value is an ordinary value, not a tombstone. Called
// directly on nil or empty input, String returns "", Bytes returns nil or
// empty respectively, and Int64, Int32 and JSON return an error.
//
// On the producing side, Bytes().Encode(nil) returns nil, which produces a
// tombstone; String().Encode("") returns an empty, non-nil slice, which does
// not.
//
// # Concurrency
//
// Encoders and decoders must be safe for concurrent use, since the framework
// calls them from several goroutines. All built-ins are stateless and
// satisfy this.
//
// # Errors
//
// A codec error that matches [ErrUnavailable] (errors.Is) says a service the codec
// depends on did not answer, not that the data is bad: the processor waits and retries
// instead of applying its error policy to the record.
//
// The built-in decoders return a [*DecodeError] (use errors.As), which the
// framework wraps with the topic, partition and offset. Error messages never
// carry payload bytes, because payloads can be personal data and errors end
// up in logs. For JSON this means encoding/json's own messages, which can
// quote parts of the input, are rebuilt from types, field names and offsets;
// the original error stays reachable through Unwrap for programmatic
// inspection. The JSON encoder returns a [*EncodeError]; encoding/json's
// marshal errors name types, not values.
package codec
