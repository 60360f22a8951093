package registry_test

import (
	"fmt"

	"github.com/samsa-go/samsa/codec/registry"
)

type Reading struct {
	Sensor string  `avro:"sensor"`
	Value  float64 `avro:"value"`
}

// An Avro codec for the values of topic "readings": its schema is derived from Reading
// and registered under "readings-value" on first use. A processor takes it as an
// Input's value decoder or an Output's value encoder. "mock://" is an in-memory registry;
// use the registry's http(s) URL.
func ExampleAvro() {
	client, err := registry.NewClient(registry.Config{URL: "mock://example"})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	readings, err := registry.Avro[Reading](client, "readings", registry.Options{})
	if err != nil {
		panic(err)
	}
	b, err := readings.Encode(Reading{Sensor: "t-1", Value: 21.5})
	if err != nil {
		panic(err)
	}
	r, err := readings.Decode(b)
	fmt.Printf("magic byte %d, schema ID %d, %d bytes: %+v %v\n", b[0], b[4], len(b), r, err)
	// Output: magic byte 0, schema ID 1, 17 bytes: {Sensor:t-1 Value:21.5} <nil>
}

// A client for a registry behind TLS and basic auth; codecs built on it share its
// schema caches.
func ExampleNewClient() {
	client, err := registry.NewClient(registry.Config{
		URL:      "https://registry.example.com:8081",
		Username: "svc-orders", Password: "…", // from the service's secrets
	})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	fmt.Println("ready")
	// Output: ready
}
