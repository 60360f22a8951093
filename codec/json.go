package codec

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// JSON returns a codec that uses encoding/json. Decode rejects empty data and
// trailing garbage, ignores unknown fields (so producers can add fields
// first), and returns the zero T on error rather than a partly filled value.
func JSON[T any]() Codec[T] {
	return jsonCodec[T]{typ: reflect.TypeFor[T]().String()}
}

type jsonCodec[T any] struct {
	typ string // Go type name for error messages, computed once
}

func (c jsonCodec[T]) Encode(v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		// encoding/json's marshal errors name types, not values (NaN/Inf
		// aside), so they are passed through; so is whatever a type's own
		// MarshalJSON returns.
		return nil, &EncodeError{Codec: "json", Err: fmt.Errorf("encode %s: %w", c.typ, err)}
	}
	return b, nil
}

// Decode needs no copying: encoding/json never aliases its input (strings,
// []byte and json.RawMessage are all copied).
func (c jsonCodec[T]) Decode(data []byte) (T, error) {
	var v T
	if len(data) == 0 {
		return v, &DecodeError{Codec: "json", Err: errors.New("decode into " + c.typ + ": empty input")}
	}
	if err := json.Unmarshal(data, &v); err != nil {
		var zero T
		return zero, &DecodeError{Codec: "json", Err: &redactedError{
			msg:   "decode into " + c.typ + ": " + describeJSONError(err),
			cause: err,
		}}
	}
	return v, nil
}

// redactedError shows a message built without payload bytes while keeping the
// original error reachable for errors.As.
type redactedError struct {
	msg   string
	cause error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.cause }

// describeJSONError rebuilds an encoding/json decode error from its
// structured fields. The original messages can quote the payload: a syntax
// error names the offending byte, an UnmarshalTypeError's Value can be
// "number 4111111111111111" (overflow, map keys), and errors from
// UnmarshalJSON/UnmarshalText methods or ",string" fields quote the input
// (time.ParseError does). Only types, field names and offsets survive.
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return describeSyntaxError(syn)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		// Value is "number", "string", "object", ... optionally followed by
		// the literal; keep only the kind.
		kind, _, _ := strings.Cut(typ.Value, " ")
		// Struct is the innermost struct's name, which reads oddly in front of
		// a path from the root; the root type is already in the message.
		into := "Go value"
		if typeErrorFieldIsSchema && typ.Field != "" {
			into = "field " + typ.Field
		}
		t := "?"
		if typ.Type != nil {
			t = typ.Type.String()
		}
		return fmt.Sprintf("cannot unmarshal JSON %s into %s of type %s (offset %d)", kind, into, t, typ.Offset)
	}
	return fmt.Sprintf("%T (message withheld: it may quote the payload)", err)
}

// describeSyntaxError keeps the scanner's context ("looking for beginning of
// value", "after top-level value", ...) but drops the quoted character from
// messages of the form "invalid character 'x' <context>".
func describeSyntaxError(e *json.SyntaxError) string {
	msg := e.Error()
	if msg == "unexpected end of JSON input" {
		return msg
	}
	if rest, ok := strings.CutPrefix(msg, "invalid character '"); ok && rest != "" {
		// Skip the first byte of the quoted character itself, which may be
		// a quote or a space, then cut at its closing quote.
		if _, context, ok := strings.Cut(rest[1:], "' "); ok {
			return fmt.Sprintf("invalid character at offset %d %s", e.Offset, context)
		}
	}
	return fmt.Sprintf("invalid JSON at offset %d", e.Offset)
}
