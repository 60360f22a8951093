package codec

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// secret marks payload bytes that must never show up in an error message.
const secret = "SECRET-PAYLOAD-123"

type address struct {
	Street string `json:"street"`
	City   string `json:"city"`
}

type lineItem struct {
	SKU   string  `json:"sku"`
	Qty   int8    `json:"qty"`
	Price float64 `json:"price"`
}

type order struct {
	ID       int64             `json:"id"`
	Customer string            `json:"customer"`
	Ship     address           `json:"ship"`
	Items    []lineItem        `json:"items"`
	Tags     map[string]string `json:"tags,omitempty"`
	Note     *string           `json:"note,omitempty"`
	At       time.Time         `json:"at"`
	Count    int               `json:"count,string"`
	ByID     map[int]string    `json:"by_id,omitempty"`
}

func TestInt64(t *testing.T) {
	tests := []struct {
		v    int64
		wire []byte
	}{
		{0, []byte{0, 0, 0, 0, 0, 0, 0, 0}},
		{1, []byte{0, 0, 0, 0, 0, 0, 0, 1}},
		{-1, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{256, []byte{0, 0, 0, 0, 0, 0, 1, 0}},
		{math.MaxInt64, []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{math.MinInt64, []byte{0x80, 0, 0, 0, 0, 0, 0, 0}},
	}
	c := Int64()
	for _, tt := range tests {
		b, err := c.Encode(tt.v)
		require.NoError(t, err)
		assert.Equal(t, tt.wire, b, "encode %d", tt.v)

		got, err := c.Decode(tt.wire)
		require.NoError(t, err)
		assert.Equal(t, tt.v, got, "decode %x", tt.wire)
	}
}

func TestInt32(t *testing.T) {
	tests := []struct {
		v    int32
		wire []byte
	}{
		{0, []byte{0, 0, 0, 0}},
		{1, []byte{0, 0, 0, 1}},
		{-1, []byte{0xff, 0xff, 0xff, 0xff}},
		{256, []byte{0, 0, 1, 0}},
		{math.MaxInt32, []byte{0x7f, 0xff, 0xff, 0xff}},
		{math.MinInt32, []byte{0x80, 0, 0, 0}},
	}
	c := Int32()
	for _, tt := range tests {
		b, err := c.Encode(tt.v)
		require.NoError(t, err)
		assert.Equal(t, tt.wire, b, "encode %d", tt.v)

		got, err := c.Decode(tt.wire)
		require.NoError(t, err)
		assert.Equal(t, tt.v, got, "decode %x", tt.wire)
	}
}

func TestFixedWidthWrongLength(t *testing.T) {
	decodeInt64 := func(b []byte) error { _, err := Int64().Decode(b); return err }
	decodeInt32 := func(b []byte) error { _, err := Int32().Decode(b); return err }
	tests := []struct {
		name   string
		decode func([]byte) error
		data   []byte
		want   string
	}{
		{"int64 nil", decodeInt64, nil, "codec: int64: want 8 bytes, got 0"},
		{"int64 empty", decodeInt64, []byte{}, "codec: int64: want 8 bytes, got 0"},
		{"int64 short", decodeInt64, []byte{1, 2, 3}, "codec: int64: want 8 bytes, got 3"},
		{"int64 int32-sized", decodeInt64, []byte{0, 0, 0, 1}, "codec: int64: want 8 bytes, got 4"},
		{"int64 long", decodeInt64, make([]byte, 9), "codec: int64: want 8 bytes, got 9"},
		{"int32 nil", decodeInt32, nil, "codec: int32: want 4 bytes, got 0"},
		{"int32 short", decodeInt32, []byte{1, 2, 3}, "codec: int32: want 4 bytes, got 3"},
		{"int32 int64-sized", decodeInt32, make([]byte, 8), "codec: int32: want 4 bytes, got 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(tt.data)
			require.Error(t, err)
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tt.name[:5], de.Codec)
			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct{ name, v string }{
		{"empty", ""},
		{"ascii", "hello"},
		{"unicode", "héllo, 世界 🚀"},
		{"nul", "a\x00b"},
		{"invalid utf-8 passes through", "\xff\xfe"},
	}
	c := String()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := c.Encode(tt.v)
			require.NoError(t, err)
			assert.Equal(t, []byte(tt.v), b)
			assert.NotNil(t, b, "must not turn into a tombstone")

			got, err := c.Decode(b)
			require.NoError(t, err)
			assert.Equal(t, tt.v, got)
		})
	}

	got, err := c.Decode(nil)
	require.NoError(t, err)
	assert.Equal(t, "", got)
}

func TestStringDecodeCopies(t *testing.T) {
	data := []byte("abc")
	got, err := String().Decode(data)
	require.NoError(t, err)
	data[0] = 'X'
	assert.Equal(t, "abc", got)
}

func TestBytes(t *testing.T) {
	tests := []struct {
		name string
		v    []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"data", []byte{0, 1, 2, 0xff}},
	}
	c := Bytes()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := c.Encode(tt.v)
			require.NoError(t, err)
			assert.Equal(t, tt.v, b)
			assert.Equal(t, tt.v == nil, b == nil, "nil-ness decides tombstone vs empty value")

			got, err := c.Decode(b)
			require.NoError(t, err)
			assert.Equal(t, tt.v, got)
			assert.Equal(t, tt.v == nil, got == nil, "nil-ness preserved")
		})
	}
}

func TestBytesDecodeReturnsCopy(t *testing.T) {
	data := []byte("payload")
	got, err := Bytes().Decode(data)
	require.NoError(t, err)

	for i := range data {
		data[i] = 'X'
	}
	assert.Equal(t, []byte("payload"), got)
}

func TestJSONRoundTrip(t *testing.T) {
	note := "leave at door"
	full := order{
		ID:       math.MaxInt64,
		Customer: "Zoë 世界",
		Ship:     address{Street: "1 Main St", City: "Springfield"},
		Items:    []lineItem{{SKU: "a", Qty: 2, Price: 9.99}, {SKU: "b", Qty: -1}},
		Tags:     map[string]string{"prio": "high"},
		Note:     &note,
		At:       time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC),
		Count:    42,
		ByID:     map[int]string{1: "x", -2: "y"},
	}
	tests := []struct {
		name string
		v    order
	}{
		{"zero", order{}},
		{"nested", full},
	}
	c := JSON[order]()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := c.Encode(tt.v)
			require.NoError(t, err)
			got, err := c.Decode(b)
			require.NoError(t, err)
			assert.Equal(t, tt.v, got)
		})
	}

	t.Run("scalar and container types", func(t *testing.T) {
		roundTrip(t, JSON[string](), "héllo")
		roundTrip(t, JSON[int64](), math.MinInt64)
		roundTrip(t, JSON[[]string](), []string{"a", ""})
		roundTrip(t, JSON[map[string]int](), map[string]int{"a": 1})
		roundTrip(t, JSON[*address](), &address{City: "x"})
	})
}

func roundTrip[T any](t *testing.T, c Codec[T], v T) {
	t.Helper()
	b, err := c.Encode(v)
	require.NoError(t, err)
	got, err := c.Decode(b)
	require.NoError(t, err)
	assert.Equal(t, v, got)
}

func TestJSONUnknownFieldsIgnored(t *testing.T) {
	got, err := JSON[address]().Decode([]byte(`{"city":"x","zip":"12345"}`))
	require.NoError(t, err)
	assert.Equal(t, address{City: "x"}, got)
}

func TestJSONDecodeErrors(t *testing.T) {
	const number = "12345678901234567"
	// want is a regexp: offsets and some error kinds differ under
	// GOEXPERIMENT=jsonv2. rawLeaks says encoding/json's own message quotes
	// the payload, which is what makes the redaction necessary.
	tests := []struct {
		name     string
		data     string
		payload  string
		rawLeaks bool
		want     string
	}{
		{"empty", "", secret, false, `^codec: json: decode into codec\.order: empty input$`},
		{"syntax", `{"id": ` + secret + `}`, secret, false, `invalid character at offset \d+ looking for beginning of value$`},
		{"truncated", `{"customer": "` + secret, secret, false, `unexpected end of JSON input$`},
		{"trailing garbage", `{"id": 1} ` + secret, secret, false, `invalid character at offset \d+ after top-level value$`},
		{"wrong type", `{"customer": {"x": "` + secret + `"}}`, secret, false, `cannot unmarshal JSON object into .* of type string \(offset \d+\)$`},
		{"number overflow", `{"items": [{"qty": ` + number + `}]}`, number, true, `cannot unmarshal JSON number into .* of type int8 \(offset \d+\)$`},
		{"bad map key", `{"by_id": {"` + secret + `": "x"}}`, secret, true, `cannot unmarshal JSON number into .* of type int \(offset \d+\)$`},
		{"custom unmarshaler", `{"at": "` + secret + `"}`, secret, true, `\*time\.ParseError \(message withheld`},
		{"string tag", `{"count": "` + secret + `"}`, secret, true, `\(message withheld|cannot unmarshal JSON number`},
	}
	c := JSON[order]()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rawLeaks {
				var o order
				rawErr := json.Unmarshal([]byte(tt.data), &o)
				require.ErrorContains(t, rawErr, tt.payload, "precondition: encoding/json quotes the payload")
			}

			got, err := c.Decode([]byte(tt.data))
			require.Error(t, err)
			assert.Zero(t, got, "no partly decoded value on error")

			var de *DecodeError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, "json", de.Codec)
			assert.True(t, strings.HasPrefix(err.Error(), "codec: json: decode into codec.order: "), err.Error())
			assert.Regexp(t, tt.want, err.Error())
			assert.NotContains(t, err.Error(), tt.payload)
		})
	}
}

func TestJSONDecodeErrorFieldPath(t *testing.T) {
	_, err := JSON[order]().Decode([]byte(`{"ship": {"city": 7}}`))
	require.Error(t, err)
	if typeErrorFieldIsSchema {
		assert.Contains(t, err.Error(), "decode into codec.order: cannot unmarshal JSON number into field ship.city of type string")
	} else {
		assert.Contains(t, err.Error(), "into Go value of type string")
	}
}

func TestJSONDecodeErrorKeepsCause(t *testing.T) {
	c := JSON[order]()

	_, err := c.Decode([]byte(`{`))
	var syn *json.SyntaxError
	assert.ErrorAs(t, err, &syn)

	_, err = c.Decode([]byte(`{"id": "x"}`))
	var typ *json.UnmarshalTypeError
	assert.ErrorAs(t, err, &typ)

	_, err = c.Decode([]byte(`{"at": "x"}`))
	var pe *time.ParseError
	assert.ErrorAs(t, err, &pe)
}

func TestJSONDecodeDoesNotAlias(t *testing.T) {
	data := []byte(`{"raw": {"a": 1}, "b": "AQID", "s": "abc"}`)
	type target struct {
		Raw json.RawMessage `json:"raw"`
		B   []byte          `json:"b"`
		S   string          `json:"s"`
	}
	got, err := JSON[target]().Decode(data)
	require.NoError(t, err)
	for i := range data {
		data[i] = 'X'
	}
	assert.Equal(t, target{Raw: json.RawMessage(`{"a": 1}`), B: []byte{1, 2, 3}, S: "abc"}, got)
}

func TestJSONEncodeErrors(t *testing.T) {
	_, err := JSON[chan int]().Encode(make(chan int))
	var ee *EncodeError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, "json", ee.Codec)
	assert.EqualError(t, err, "codec: json: encode chan int: json: unsupported type: chan int")
	var ute *json.UnsupportedTypeError
	assert.ErrorAs(t, err, &ute)

	_, err = JSON[any]().Encode(math.NaN())
	require.ErrorAs(t, err, &ee)
	assert.EqualError(t, err, "codec: json: encode interface {}: json: unsupported value: NaN")
}

func TestFunc(t *testing.T) {
	errBad := errors.New("bad input")
	c := Func(
		func(v string) ([]byte, error) { return []byte(strings.ToUpper(v)), nil },
		func(b []byte) (string, error) {
			if len(b) == 0 {
				return "", errBad
			}
			return strings.ToLower(string(b)), nil
		},
	)

	b, err := c.Encode("abc")
	require.NoError(t, err)
	assert.Equal(t, []byte("ABC"), b)

	got, err := c.Decode(b)
	require.NoError(t, err)
	assert.Equal(t, "abc", got)

	_, err = c.Decode(nil)
	assert.Same(t, errBad, err, "user errors pass through unwrapped")

	assert.Panics(t, func() { Func[string](nil, c.Decode) })
	assert.Panics(t, func() { Func(c.Encode, nil) })

	// The single-direction adapters satisfy their interfaces.
	var enc Encoder[int64] = EncoderFunc[int64](Int64().Encode)
	var dec Decoder[int64] = DecoderFunc[int64](Int64().Decode)
	b, err = enc.Encode(5)
	require.NoError(t, err)
	v, err := dec.Decode(b)
	require.NoError(t, err)
	assert.Equal(t, int64(5), v)
}

func TestErrorTypes(t *testing.T) {
	inner := errors.New("inner")
	de := &DecodeError{Codec: "x", Err: inner}
	assert.EqualError(t, de, "codec: x: inner")
	assert.ErrorIs(t, de, inner)
	assert.EqualError(t, &DecodeError{Codec: "x"}, "codec: x: unknown error")

	ee := &EncodeError{Codec: "y", Err: inner}
	assert.EqualError(t, ee, "codec: y: inner")
	assert.ErrorIs(t, ee, inner)
}

// TestConcurrentUse is meant for -race: built-ins share no state.
func TestConcurrentUse(t *testing.T) {
	i64, i32, str, byt, js := Int64(), Int32(), String(), Bytes(), JSON[order]()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := int64(g*1000 + i)
				b, _ := i64.Encode(n)
				v, err := i64.Decode(b)
				assert.NoError(t, err)
				assert.Equal(t, n, v)

				b, _ = i32.Encode(int32(n))
				w, err := i32.Decode(b)
				assert.NoError(t, err)
				assert.Equal(t, int32(n), w)

				s, _ := str.Decode([]byte("x"))
				assert.Equal(t, "x", s)
				bb, _ := byt.Decode([]byte("y"))
				assert.Equal(t, []byte("y"), bb)

				b, err = js.Encode(order{ID: n})
				assert.NoError(t, err)
				o, err := js.Decode(b)
				assert.NoError(t, err)
				assert.Equal(t, n, o.ID)
			}
		})
	}
	wg.Wait()
}

func FuzzInt64RoundTrip(f *testing.F) {
	for _, v := range []int64{0, 1, -1, 255, 256, math.MaxInt64, math.MinInt64} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v int64) {
		b, err := Int64().Encode(v)
		require.NoError(t, err)
		require.Len(t, b, 8)
		got, err := Int64().Decode(b)
		require.NoError(t, err)
		require.Equal(t, v, got)

		b, err = Int32().Encode(int32(v))
		require.NoError(t, err)
		require.Len(t, b, 4)
		got32, err := Int32().Decode(b)
		require.NoError(t, err)
		require.Equal(t, int32(v), got32)
	})
}

// FuzzJSONNoPanic feeds arbitrary bytes to every built-in decoder: none may
// panic, failures must be *DecodeError, and messages must not echo the input.
func FuzzJSONNoPanic(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"id": 1, "ship": {"city": "x"}}`,
		`{"items": [{"qty": 300}]}`, `{"by_id": {"abc": "x"}}`, `{"at": "nope"}`,
		`{"count": "12"}`, `{"id": ` + secret + `}`, "\xff\x00", `{"tags": {"a": 1}}`,
	} {
		f.Add([]byte(s))
	}
	jsOrder, jsAny := JSON[order](), JSON[any]()
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(err error) {
			t.Helper()
			if err == nil {
				return
			}
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			// Short inputs may coincide with words of a message by chance.
			if len(data) >= 16 {
				require.NotContains(t, err.Error(), string(data))
			}
		}

		o, err := jsOrder.Decode(data)
		check(err)
		if err == nil {
			_, err := jsOrder.Encode(o)
			require.NoError(t, err, "a decoded value must re-encode")
		}
		_, err = jsAny.Decode(data)
		check(err)

		_, err = Int64().Decode(data)
		check(err)
		_, err = Int32().Decode(data)
		check(err)

		s, err := String().Decode(data)
		require.NoError(t, err)
		require.Equal(t, string(data), s)
		b, err := Bytes().Decode(data)
		require.NoError(t, err)
		require.Equal(t, data, b)
	})
}

// The benchmarks decode through interface values and keep results in package
// sinks, as the framework does; otherwise the compiler devirtualizes the call
// and keeps a short string on the stack, hiding the real allocation.
var (
	benchInt64  Codec[int64]  = Int64()
	benchString Codec[string] = String()
	benchJSON   Codec[order]  = JSON[order]()

	sinkInt64  int64
	sinkString string
	sinkOrder  order
)

func BenchmarkInt64Decode(b *testing.B) {
	data, _ := benchInt64.Encode(1 << 40)
	b.ReportAllocs()
	for b.Loop() {
		sinkInt64, _ = benchInt64.Decode(data)
	}
}

func BenchmarkStringDecode(b *testing.B) {
	data := []byte("order-0000000042")
	b.ReportAllocs()
	for b.Loop() {
		sinkString, _ = benchString.Decode(data)
	}
}

func BenchmarkJSONDecode(b *testing.B) {
	data, _ := benchJSON.Encode(order{ID: 1, Customer: "c", Ship: address{City: "x"}, Items: []lineItem{{SKU: "a", Qty: 1}}})
	b.ReportAllocs()
	for b.Loop() {
		sinkOrder, _ = benchJSON.Decode(data)
	}
}
