//go:build tools

// Package jaeger pins the Jaeger all-in-one binary that the integration launcher builds.
package jaeger

import _ "github.com/jaegertracing/jaeger/cmd/all-in-one"
