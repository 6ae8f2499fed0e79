package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
)

// The codecs every client produces in, by Kafka's names.
var codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

const recordsPerCodec = 400
const partitionsCreated = 3
const partitionsAfterGrowth = 4

// Header is one record header as produced; a nil value is a null header value.
type Header struct {
	Key   string
	Value []byte
}

// Expected is one produced record as a consumer must see it.
type Expected struct {
	Codec     string
	Index     int
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp int64 // milliseconds, as acknowledged
}

func expectedRecord(codec string, index int) Expected {
	value := []byte(strings.Repeat(fmt.Sprintf("value %s %d ", codec, index), 1+index%5))
	if index == 7 {
		value = []byte{} // one empty value per codec
	}
	indexBytes := make([]byte, 4)
	binary.BigEndian.PutUint32(indexBytes, uint32(index))
	return Expected{
		Codec: codec,
		Index: index,
		Key:   []byte(fmt.Sprintf("key-%s-%d", codec, index)),
		Value: value,
		Headers: []Header{
			{"codec", []byte(codec)},
			{"index", indexBytes},
			{"null-valued", nil},
			{"codec", []byte("again")}, // a repeated header name is legal
		},
	}
}

// Produced maps partition -> offset -> record.
type Produced map[int32]map[int64]Expected

func (p Produced) add(s *scenario, partition int32, offset int64, record Expected) {
	if p[partition] == nil {
		p[partition] = map[int64]Expected{}
	}
	_, twice := p[partition][offset]
	s.check(!twice, "offset %d of partition %d acknowledged once", offset, partition)
	p[partition][offset] = record
}

func (p Produced) total() int {
	total := 0
	for _, records := range p {
		total += len(records)
	}
	return total
}

// checkRecord compares what a consumer delivered with what was acknowledged. Go clients
// hand a null header value and an empty one alike, so those compare equal.
func (e Expected) checkRecord(where string, key, value []byte, headers []Header, timestampMs int64) {
	if !bytes.Equal(key, e.Key) {
		panic(fmt.Errorf("%s: key %q, want %q", where, key, e.Key))
	}
	if !bytes.Equal(value, e.Value) {
		panic(fmt.Errorf("%s: value %q, want %q", where, value, e.Value))
	}
	same := len(headers) == len(e.Headers)
	for i := 0; same && i < len(headers); i++ {
		same = headers[i].Key == e.Headers[i].Key && bytes.Equal(headers[i].Value, e.Headers[i].Value)
	}
	if !same {
		panic(fmt.Errorf("%s: headers %v, want %v", where, headers, e.Headers))
	}
	if timestampMs != e.Timestamp {
		panic(fmt.Errorf("%s: timestamp %d, want %d", where, timestampMs, e.Timestamp))
	}
}
