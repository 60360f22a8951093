//go:build !goexperiment.jsonv2

package codec

// The classic encoding/json decoder builds UnmarshalTypeError.Field only from
// struct field names, i.e. from the schema, so it is safe to show.
const typeErrorFieldIsSchema = true
