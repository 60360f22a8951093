package codec

import "errors"

// ErrUnavailable is matched (errors.Is) by codec errors whose cause is a service the
// codec depends on, such as a schema registry, that did not answer: the data may be
// fine and the same call may succeed later. The processor retries a batch that fails
// this way instead of applying the error policy to its records.
var ErrUnavailable = errors.New("codec: a service the codec depends on is unavailable")

// Encoder turns a value into bytes. Implementations must be safe for
// concurrent use.
type Encoder[T any] interface {
	Encode(v T) ([]byte, error)
}

// Decoder turns bytes into a value. Implementations must be safe for
// concurrent use. The data slice may be reused by the caller after Decode
// returns: a decoder that keeps bytes must copy them.
type Decoder[T any] interface {
	Decode(data []byte) (T, error)
}

// Codec is both an [Encoder] and a [Decoder] for the same type.
type Codec[T any] interface {
	Encoder[T]
	Decoder[T]
}

// EncoderFunc adapts an ordinary function to the [Encoder] interface, like
// http.HandlerFunc does for handlers.
type EncoderFunc[T any] func(v T) ([]byte, error)

// Encode calls f(v).
func (f EncoderFunc[T]) Encode(v T) ([]byte, error) { return f(v) }

// DecoderFunc adapts an ordinary function to the [Decoder] interface.
type DecoderFunc[T any] func(data []byte) (T, error)

// Decode calls f(data).
func (f DecoderFunc[T]) Decode(data []byte) (T, error) { return f(data) }

// Func builds a [Codec] from a pair of functions. Errors are returned as the
// functions produce them, unwrapped: they are the caller's to keep free of
// payload bytes. The functions must be safe for concurrent use and dec must
// not retain data (see [Decoder]).
//
// Func panics if enc or dec is nil: a half-built codec would otherwise fail
// only on first use, deep inside a running processor. Use [EncoderFunc] or
// [DecoderFunc] when only one direction is needed.
func Func[T any](enc func(T) ([]byte, error), dec func([]byte) (T, error)) Codec[T] {
	if enc == nil || dec == nil {
		panic("codec: Func called with a nil function")
	}
	return funcCodec[T]{enc, dec}
}

type funcCodec[T any] struct {
	EncoderFunc[T]
	DecoderFunc[T]
}

// DecodeError is returned by the built-in decoders; the framework wraps it
// with topic/partition/offset.
//
// Its message never contains payload bytes, only the codec name and
// schema-level detail (lengths, Go types, struct field names, offsets).
type DecodeError struct {
	Codec string // built-in codec name: "int64", "int32", "json"
	Err   error  // what went wrong; see Unwrap
}

func (e *DecodeError) Error() string { return "codec: " + e.Codec + ": " + errText(e.Err) }

// Unwrap returns the underlying error. For JSON this leads, via a further
// Unwrap, to the original encoding/json (or custom unmarshaler) error so that
// errors.As still works; that error's own message is not redacted and may
// quote the payload, so log the DecodeError, not the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// EncodeError is returned by the built-in encoders that can fail (JSON).
type EncodeError struct {
	Codec string
	Err   error
}

func (e *EncodeError) Error() string { return "codec: " + e.Codec + ": " + errText(e.Err) }

// Unwrap returns the underlying error.
func (e *EncodeError) Unwrap() error { return e.Err }

func errText(err error) string {
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}
