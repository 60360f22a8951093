package codec

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// String returns a codec for UTF-8 text. Bytes are passed through as-is,
// without validation, like Kafka's StringSerializer. Decode of nil or empty
// data returns "".
func String() Codec[string] { return stringCodec{} }

type stringCodec struct{}

// Encode never returns nil, so an empty string is produced as an empty value,
// not as a tombstone.
func (stringCodec) Encode(v string) ([]byte, error) { return []byte(v), nil }

// Decode copies by construction: converting to string allocates.
func (stringCodec) Decode(data []byte) (string, error) { return string(data), nil }

// Bytes returns the identity codec. Encode returns v itself, without a copy
// (the Kafka client copies the value when producing), so a nil slice stays
// nil and is produced as a tombstone. Decode returns a copy, because the
// caller may reuse data; nil decodes to nil and empty to empty.
func Bytes() Codec[[]byte] { return bytesCodec{} }

type bytesCodec struct{}

func (bytesCodec) Encode(v []byte) ([]byte, error) { return v, nil }

func (bytesCodec) Decode(data []byte) ([]byte, error) { return bytes.Clone(data), nil }

// Int64 returns a codec for 8-byte big-endian two's-complement integers, the
// wire format of Kafka's LongSerializer and LongDeserializer. Decode rejects
// any length other than 8.
func Int64() Codec[int64] { return int64Codec{} }

type int64Codec struct{}

func (int64Codec) Encode(v int64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(v)), nil
}

func (int64Codec) Decode(data []byte) (int64, error) {
	if len(data) != 8 {
		return 0, lengthError("int64", 8, len(data))
	}
	return int64(binary.BigEndian.Uint64(data)), nil
}

// Int32 returns a codec for 4-byte big-endian two's-complement integers, the
// wire format of Kafka's IntegerSerializer and IntegerDeserializer. Decode
// rejects any length other than 4.
func Int32() Codec[int32] { return int32Codec{} }

type int32Codec struct{}

func (int32Codec) Encode(v int32) ([]byte, error) {
	return binary.BigEndian.AppendUint32(make([]byte, 0, 4), uint32(v)), nil
}

func (int32Codec) Decode(data []byte) (int32, error) {
	if len(data) != 4 {
		return 0, lengthError("int32", 4, len(data))
	}
	return int32(binary.BigEndian.Uint32(data)), nil
}

func lengthError(codec string, want, got int) error {
	return &DecodeError{Codec: codec, Err: fmt.Errorf("want %d bytes, got %d", want, got)}
}
