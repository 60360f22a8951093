//go:build linux && !musl

package main

/*
#include <malloc.h>
*/
import "C"

// cMalloc returns what glibc's malloc has handed out and not freed (small blocks in its
// arenas plus mmapped large blocks), over every thread's arena: librdkafka's memory, as
// confluent-kafka-go links it against glibc. held is what malloc holds from the OS,
// freed blocks it keeps in its arenas included. ok is false where it cannot be read.
func cMalloc() (inUse, held int64, ok bool) {
	m := C.mallinfo2()
	return int64(m.uordblks) + int64(m.hblkhd), int64(m.arena) + int64(m.hblkhd), true
}
