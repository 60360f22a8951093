package main

// partitionOf returns the partition Kafka's default partitioner puts key in: the positive
// murmur2 hash of the key bytes modulo the partition count. It matches the Java client's
// DefaultPartitioner/BuiltInPartitioner and librdkafka's "murmur2_random" (the
// partitioner of the example's producer and of samsa's outputs), so any node can tell,
// without asking Kafka, which partition, and so which table partition, holds a user.
func partitionOf(key []byte, partitions int) int32 {
	return int32(int(murmur2(key)&0x7fffffff) % partitions)
}

// murmur2 is Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2): seed
// 0x9747b28c, 4-byte little-endian blocks, the tail folded in, then the final mix.
func murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(data)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n&^3:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}
