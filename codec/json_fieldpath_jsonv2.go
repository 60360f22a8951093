//go:build goexperiment.jsonv2

package codec

// With GOEXPERIMENT=jsonv2, UnmarshalTypeError.Field is a path through the
// data and includes map keys taken from the payload, so it is not shown.
const typeErrorFieldIsSchema = false
