//go:build !linux || musl

package main

// cMalloc is unavailable without glibc's mallinfo2.
func cMalloc() (inUse, held int64, ok bool) { return 0, 0, false }
