package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// idempotenceServedFranz: Karst serves InitProducerId (issue 8) and kgo is idempotent by
// default, so the producer runs with kgo's defaults.
const idempotenceServedFranz = true

func franzCodec(codec string) kgo.CompressionCodec {
	switch codec {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	default:
		return kgo.NoCompression()
	}
}

func franzClient(options Options, extra ...kgo.Opt) *kgo.Client {
	opts := []kgo.Opt{
		kgo.SeedBrokers(options.Bootstrap...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.RecordDeliveryTimeout(callTimeout),
	}
	if !idempotenceServedFranz {
		opts = append(opts, kgo.DisableIdempotentWrite()) // issue 8
	}
	client, err := kgo.NewClient(append(opts, extra...)...)
	must(err, "kgo.NewClient")
	return client
}

func runFranz(s *scenario, options Options) {
	topic := options.TopicPrefix + "-codecs"
	missing := options.TopicPrefix + "-missing"
	client := franzClient(options)
	defer client.Close()
	admin := kadm.NewClient(client)
	ctx := context.Background()
	timeout := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, callTimeout) }

	s.step("describe cluster", func() {
		c, cancel := timeout()
		defer cancel()
		metadata, err := admin.BrokerMetadata(c)
		must(err, "BrokerMetadata")
		s.check(len(metadata.Brokers) == options.Brokers, "%d brokers, want %d", len(metadata.Brokers), options.Brokers)
		s.check(metadata.Cluster != "", "cluster id present")
		s.check(metadata.Controller >= 0, "a controller is named")
	})

	s.step("create and describe topic", func() {
		c, cancel := timeout()
		defer cancel()
		created, err := admin.CreateTopics(c, partitionsCreated, options.ReplicationFactor,
			map[string]*string{"retention.ms": kadm.StringPtr("86400000"), "cleanup.policy": kadm.StringPtr("delete")}, topic)
		must(err, "CreateTopics")
		must(created.Error(), "create "+topic)
		eventually("topic "+topic+" with leaders", func() bool {
			details, err := admin.ListTopics(c, topic)
			must(err, "ListTopics")
			detail := details[topic]
			if detail.Err != nil || len(detail.Partitions) != partitionsCreated {
				return false
			}
			for _, partition := range detail.Partitions {
				if partition.Leader < 0 {
					return false
				}
			}
			return true
		})
		details, err := admin.ListTopics(c, topic)
		must(err, "ListTopics")
		for _, partition := range details[topic].Partitions {
			s.check(len(partition.Replicas) == int(options.ReplicationFactor), "partition %d has %d replicas",
				partition.Partition, options.ReplicationFactor)
		}
		s.check(details[topic].ID != kadm.TopicID{}, "topic id present")

		again, err := admin.CreateTopics(c, 1, options.ReplicationFactor, nil, topic)
		must(err, "CreateTopics again")
		s.check(errors.Is(again[topic].Err, kerr.TopicAlreadyExists), "create existing topic: %v, want TOPIC_ALREADY_EXISTS", again[topic].Err)
		bad, err := admin.CreateTopics(c, 1, options.ReplicationFactor,
			map[string]*string{"retention.ms": kadm.StringPtr("not-a-number")}, topic+"-bad-config")
		must(err, "CreateTopics bad config")
		s.check(errors.Is(bad[topic+"-bad-config"].Err, kerr.InvalidConfig), "bad config: %v, want INVALID_CONFIG", bad[topic+"-bad-config"].Err)
	})

	s.step("alter and describe configs", func() {
		c, cancel := timeout()
		defer cancel()
		configs := franzTopicConfigs(c, admin, topic)
		retention := configs["retention.ms"]
		s.check(retention.Value != nil && *retention.Value == "86400000", "retention.ms as created")
		s.check(retention.Source == kmsg.ConfigSourceDynamicTopicConfig, "retention.ms is a topic override (source %v)", retention.Source)
		altered, err := admin.AlterTopicConfigs(c, []kadm.AlterConfig{
			{Op: kadm.SetConfig, Name: "retention.bytes", Value: kadm.StringPtr("1073741824")},
			{Op: kadm.DeleteConfig, Name: "retention.ms"},
		}, topic)
		must(err, "AlterTopicConfigs")
		for _, response := range altered {
			must(response.Err, "alter configs of "+topic)
		}
		eventually("altered configs of "+topic, func() bool {
			configs = franzTopicConfigs(c, admin, topic)
			bytes, millis := configs["retention.bytes"], configs["retention.ms"]
			return bytes.Value != nil && *bytes.Value == "1073741824" && millis.Source != kmsg.ConfigSourceDynamicTopicConfig
		})
		s.check(configs["retention.bytes"].Source == kmsg.ConfigSourceDynamicTopicConfig, "retention.bytes is a topic override")
		s.check(configs["retention.ms"].Value != nil && *configs["retention.ms"].Value == "604800000", "retention.ms back to 7 days")
		s.check(configs["cleanup.policy"].Value != nil && *configs["cleanup.policy"].Value == "delete", "cleanup.policy kept")
	})

	s.step("create partitions", func() {
		c, cancel := timeout()
		defer cancel()
		grown, err := admin.UpdatePartitions(c, partitionsAfterGrowth, topic)
		must(err, "UpdatePartitions")
		must(grown.Error(), "grow "+topic)
		eventually(fmt.Sprintf("%s with %d partitions", topic, partitionsAfterGrowth), func() bool {
			details, err := admin.ListTopics(c, topic)
			must(err, "ListTopics")
			return details[topic].Err == nil && len(details[topic].Partitions) == partitionsAfterGrowth
		})
		s.checks++
	})

	produced := Produced{}
	s.step("produce in every codec", func() {
		for _, codec := range codecs {
			producer := franzClient(options, kgo.ProducerBatchCompression(franzCodec(codec)))
			records := make([]*kgo.Record, 0, recordsPerCodec)
			// ProduceSync reports in completion order, so each result finds its record by pointer.
			sent := make(map[*kgo.Record]Expected, recordsPerCodec)
			for index := 0; index < recordsPerCodec; index++ {
				record := expectedRecord(codec, index)
				headers := make([]kgo.RecordHeader, 0, len(record.Headers))
				for _, header := range record.Headers {
					headers = append(headers, kgo.RecordHeader{Key: header.Key, Value: header.Value})
				}
				produce := &kgo.Record{Topic: topic, Key: record.Key, Value: record.Value, Headers: headers}
				records = append(records, produce)
				sent[produce] = record
			}
			c, cancel := timeout()
			results := producer.ProduceSync(c, records...)
			cancel()
			must(results.FirstErr(), "produce "+codec)
			for _, result := range results {
				record := sent[result.Record]
				record.Timestamp = result.Record.Timestamp.UnixMilli()
				produced.add(s, result.Record.Partition, result.Record.Offset, record)
			}
			producer.Close()
		}
		s.check(produced.total() == len(codecs)*recordsPerCodec, "every record acknowledged")
		s.check(len(produced) > 1, "keys spread over partitions")
	})

	s.step("consume by partition and check every record", func() {
		partitions := map[int32]kgo.Offset{}
		for partition := range produced {
			partitions[partition] = kgo.NewOffset().AtStart()
		}
		// Partitions consumed directly, no group (the group step below subscribes).
		consumer := franzClient(options, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: partitions}))
		defer consumer.Close()
		next := map[int32]int64{}
		consumed, wanted := 0, produced.total()
		c, cancel := timeout()
		defer cancel()
		for consumed < wanted {
			fetches := consumer.PollFetches(c)
			if c.Err() != nil {
				panic(fmt.Errorf("consumed %d of %d records in %s", consumed, wanted, callTimeout))
			}
			for _, fetchError := range fetches.Errors() {
				panic(fmt.Errorf("fetch %s[%d]: %w", fetchError.Topic, fetchError.Partition, fetchError.Err))
			}
			fetches.EachRecord(func(record *kgo.Record) {
				where := fmt.Sprintf("%s-%d@%d", record.Topic, record.Partition, record.Offset)
				if record.Offset != next[record.Partition] {
					panic(fmt.Errorf("%s: after offset %d", where, next[record.Partition]-1))
				}
				next[record.Partition]++
				expected, found := produced[record.Partition][record.Offset]
				if !found {
					panic(fmt.Errorf("%s: never acknowledged", where))
				}
				headers := make([]Header, 0, len(record.Headers))
				for _, header := range record.Headers {
					headers = append(headers, Header{header.Key, header.Value})
				}
				expected.checkRecord(where, record.Key, record.Value, headers, record.Timestamp.UnixMilli())
				consumed++
			})
		}
		s.checks += consumed
	})

	s.step("consume in a group, commit, resume", func() { franzGroup(s, options, admin, topic, produced) })

	s.step("list offsets", func() {
		c, cancel := timeout()
		defer cancel()
		starts, err := admin.ListStartOffsets(c, topic)
		must(err, "ListStartOffsets")
		ends, err := admin.ListEndOffsets(c, topic)
		must(err, "ListEndOffsets")
		newest, err := admin.ListMaxTimestampOffsets(c, topic)
		must(err, "ListMaxTimestampOffsets")
		for partition, records := range produced {
			start, _ := starts.Lookup(topic, partition)
			end, _ := ends.Lookup(topic, partition)
			maxTimestamp, _ := newest.Lookup(topic, partition)
			must(start.Err, "start offset")
			must(end.Err, "end offset")
			must(maxTimestamp.Err, "max timestamp offset")
			s.check(start.Offset == 0, "partition %d earliest offset %d, want 0", partition, start.Offset)
			s.check(end.Offset == int64(len(records)), "partition %d latest offset %d, want %d", partition, end.Offset, len(records))
			var newestTimestamp int64
			for _, record := range records {
				newestTimestamp = max(newestTimestamp, record.Timestamp)
			}
			s.check(maxTimestamp.Timestamp == newestTimestamp, "partition %d max timestamp %d, want %d",
				partition, maxTimestamp.Timestamp, newestTimestamp)
			s.check(records[maxTimestamp.Offset].Timestamp == newestTimestamp, "partition %d max-timestamp offset %d holds it",
				partition, maxTimestamp.Offset)
		}
	})

	s.step("missing topic errors", func() { franzMissingTopic(s, options, admin, missing) })

	s.step("delete topic", func() {
		c, cancel := timeout()
		defer cancel()
		deleted, err := admin.DeleteTopics(c, topic)
		must(err, "DeleteTopics")
		must(deleted.Error(), "delete "+topic)
		eventually(topic+" gone from metadata", func() bool {
			details, err := admin.ListTopics(c, topic)
			must(err, "ListTopics")
			return errors.Is(details[topic].Err, kerr.UnknownTopicOrPartition)
		})
		s.checks++
		franzMissingTopic(s, options, admin, topic)
	})
}

func franzTopicConfigs(ctx context.Context, admin *kadm.Client, topic string) map[string]kadm.Config {
	described, err := admin.DescribeTopicConfigs(ctx, topic)
	must(err, "DescribeTopicConfigs")
	configs := map[string]kadm.Config{}
	for _, resource := range described {
		must(resource.Err, "describe configs of "+topic)
		for _, config := range resource.Configs {
			configs[config.Key] = config
		}
	}
	return configs
}

func franzMissingTopic(s *scenario, options Options, admin *kadm.Client, missing string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	details, err := admin.ListTopics(ctx, missing)
	must(err, "ListTopics "+missing)
	s.check(errors.Is(details[missing].Err, kerr.UnknownTopicOrPartition), "describe %s: %v", missing, details[missing].Err)

	configs, configsErr := admin.DescribeTopicConfigs(ctx, missing)
	if configsErr == nil && len(configs) == 1 {
		configsErr = configs[0].Err
	}
	s.check(errors.Is(configsErr, kerr.UnknownTopicOrPartition), "describe configs of %s: %v", missing, configsErr)

	deleted, err := admin.DeleteTopics(ctx, missing)
	must(err, "DeleteTopics "+missing)
	s.check(errors.Is(deleted[missing].Err, kerr.UnknownTopicOrPartition), "delete %s: %v", missing, deleted[missing].Err)

	// kgo asks Metadata for the topic a few times (UnknownTopicRetries), then fails the record
	// with the broker's error.
	producer := franzClient(options, kgo.UnknownTopicRetries(2))
	defer producer.Close()
	result := producer.ProduceSync(ctx, &kgo.Record{Topic: missing, Value: []byte("v")})
	s.check(errors.Is(result.FirstErr(), kerr.UnknownTopicOrPartition), "produce to %s: %v", missing, result.FirstErr())

	listed, err := admin.ListTopics(ctx)
	must(err, "ListTopics")
	s.check(!listed.Has(missing), "%s still does not exist", missing)
}
