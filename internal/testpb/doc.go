// Package testpb holds Protobuf messages generated for tests of the schema-registry
// codecs. It is not part of the API.
package testpb
