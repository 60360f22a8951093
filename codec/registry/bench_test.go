package registry_test

import (
	"testing"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/codec/registry"
)

// BenchmarkCodecs: one record's encode and decode with the registry codecs (schema ID
// cached after the first record) next to codec.JSON, on the in-memory registry.
//
//	go test -run '^$' -bench Codecs ./codec/registry/
func BenchmarkCodecs(b *testing.B) {
	c, err := registry.NewClient(registry.Config{URL: "mock://bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	avro, err := registry.Avro[purchase](c, "bench", registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	js, err := registry.JSONSchema[purchase](c, "bench-js", registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	v := purchase{User: "user-0001", Amount: 123456, Note: "a short note"}
	for _, f := range []struct {
		name string
		c    codec.Codec[purchase]
	}{{"avro", avro}, {"jsonschema", js}, {"json", codec.JSON[purchase]()}} {
		data, err := f.c.Encode(v)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(f.name+"/encode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.c.Encode(v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(f.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.c.Decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
